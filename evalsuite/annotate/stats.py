"""Agreement between annotators, and between an LLM judge and the humans, with bootstrap CIs.

Cohen's kappa comes from scikit-learn and Krippendorff's alpha from the `krippendorff` package;
Fleiss' kappa is the textbook formula (Fleiss 1971), checked against statsmodels in the tests.
CIs are percentile bootstraps over items (the unit that was sampled), seeded, so a re-run gives
the same numbers. A "rater" is an annotator or a label source an imported file carried (named
`label:COLUMN`), so imported human labels are compared exactly like new ones.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Labels = dict[str, dict[str, str]]  # rater -> item key -> label


def percent_agreement(a: Sequence[Any], b: Sequence[Any]) -> float:
    return float(np.mean([x == y for x, y in zip(a, b)])) if len(a) else math.nan


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Cohen's kappa of two raters; 1.0 when both use one and the same label throughout (sklearn says nan)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) == 0:
        return math.nan
    if len(set(a) | set(b)) == 1:
        return 1.0
    return float(cohen_kappa_score(list(a), list(b)))


def fleiss_kappa(table: Any) -> float:
    """Fleiss' kappa from an items x categories count table (every row the same number of raters)."""
    t = np.asarray(table, dtype=float)
    n = t.sum(axis=1)
    if len(t) == 0 or n.min() < 2 or not np.allclose(n, n[0]):
        return math.nan
    r = n[0]
    p_item = (np.sum(t * t, axis=1) - r) / (r * (r - 1))
    p_cat = t.sum(axis=0) / t.sum()
    pe = float(np.sum(p_cat ** 2))
    return 1.0 if pe == 1.0 else float((p_item.mean() - pe) / (1 - pe))


def krippendorff_alpha(matrix: Any, level: str = "nominal") -> float:
    """Krippendorff's alpha of a raters x items matrix (nan = not rated); any number of raters."""
    import krippendorff

    m = np.asarray(matrix, dtype=float)
    if m.size == 0 or np.sum(~np.isnan(m).all(axis=0) & (np.sum(~np.isnan(m), axis=0) >= 2)) == 0:
        return math.nan
    values = m[~np.isnan(m)]
    if len(np.unique(values)) == 1:
        return 1.0
    return float(krippendorff.alpha(reliability_data=m, level_of_measurement=level))


def bootstrap(fn: Callable[[Any], float], n_items: int, n_boot: int = 1000, seed: int = 0,
              confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile CI of `fn(indices)` over items resampled with replacement; (None, None) below 2 items."""
    if n_items < 2 or n_boot < 1:
        return None, None
    rng = np.random.default_rng(seed)
    values = [fn(rng.integers(0, n_items, n_items)) for _ in range(n_boot)]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return None, None
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def _boot_kappas(a: Any, b: Any, n_boot: int, seed: int) -> tuple[Any, Any]:
    """Agreement and Cohen's kappa of every bootstrap resample at once (numpy; the same resamples as
    `bootstrap` draws, so it equals that loop over `cohen_kappa`, about 100x faster on thousands of items)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    ra, rb = a[idx], b[idx]
    po = np.mean(ra == rb, axis=1)
    pe = np.zeros(n_boot)
    for k in np.union1d(a, b):
        pe += np.mean(ra == k, axis=1) * np.mean(rb == k, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(pe == 1.0, np.where(po == 1.0, 1.0, np.nan), (po - pe) / (1.0 - pe))
    return po, kappa


def _ci(values: Any, confidence: float = 0.95) -> list[float | None]:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return [None, None]
    tail = (1 - confidence) / 2 * 100
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])]


def pair_stats(a: Sequence[Any], b: Sequence[Any], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Percent agreement and Cohen's kappa (scikit-learn) of two raters on the same items, each with a CI."""
    a, b = list(a), list(b)
    out: dict[str, Any] = {"n": len(a), "agreement": _num(percent_agreement(a, b)), "agreement_ci": [None, None],
                           "kappa": _num(cohen_kappa(a, b)), "kappa_ci": [None, None]}
    if len(a) >= 2 and n_boot >= 1:
        codes = {v: i for i, v in enumerate(sorted(set(map(str, a)) | set(map(str, b))))}
        po, kappa = _boot_kappas(np.array([codes[str(v)] for v in a]), np.array([codes[str(v)] for v in b]),
                                 n_boot, seed)
        out["agreement_ci"], out["kappa_ci"] = _ci(po), _ci(kappa)
    return out


def annotator_agreement(labels: Labels, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Every pair of raters on their shared items, and all raters together (Fleiss on the items every
    rater labelled, Krippendorff's alpha on all items with two or more labels)."""
    raters = sorted(r for r in labels if labels[r])
    out: dict[str, Any] = {"raters": raters, "pairs": {}}
    for x, y in itertools.combinations(raters, 2):
        shared = sorted(set(labels[x]) & set(labels[y]))
        if shared:
            out["pairs"][f"{x} | {y}"] = pair_stats([labels[x][k] for k in shared], [labels[y][k] for k in shared],
                                                     n_boot, seed)
    items = sorted({k for r in raters for k in labels[r]})
    categories = sorted({v for r in raters for v in labels[r].values()})
    if len(raters) < 2 or not items:
        return out
    code = {c: i for i, c in enumerate(categories)}
    matrix = np.array([[code[labels[r][k]] if k in labels[r] else np.nan for k in items] for r in raters])
    rated = np.sum(~np.isnan(matrix), axis=0) >= 2
    m2 = matrix[:, rated]
    alpha = krippendorff_alpha(m2)
    alpha_ci = bootstrap(lambda i: krippendorff_alpha(m2[:, i]), m2.shape[1], min(n_boot, 300), seed)
    full = ~np.isnan(matrix).any(axis=0)
    counts = np.array([[np.sum(matrix[:, j] == c) for c in range(len(categories))] for j in np.where(full)[0]])
    fk = fleiss_kappa(counts) if len(counts) else math.nan
    fk_ci = bootstrap(lambda i: fleiss_kappa(counts[i]), len(counts), n_boot, seed)
    out["all"] = {"items": int(rated.sum()), "krippendorff_alpha": _num(alpha), "alpha_ci": list(alpha_ci),
                  "fleiss_items": int(full.sum()), "fleiss_kappa": _num(fk), "fleiss_ci": list(fk_ci)}
    return out


def store_labels(store: Any) -> Labels:
    """Rater -> item key -> label from a store: each annotator's verdicts, plus the labels items came with.

    Pairwise verdicts are model-level outcomes (which model won, tie, both bad), so two annotators who
    saw the sides swapped still agree; Likert projects with labels use the label, else the rounded mean
    score; ranking uses the model ranked first."""
    out: Labels = {}
    for it in store.items():
        for source, label in (it.get("labels") or {}).items():
            out.setdefault(f"label:{source}", {})[it["key"]] = str(label)
    for j in store.judgments():
        out.setdefault(j["annotator"], {})[j["item"]] = verdict_label(store.mode, j["result"])
    return out


def verdict_label(mode: str, result: dict[str, Any]) -> str:
    if mode == "pairwise":
        return result["outcome"] if result["winner"] is None else f"win:{result['winner']}"
    if mode == "likert":
        if "label" in result:
            return str(result["label"])
        scores = list(result["scores"].values())
        return str(round(sum(scores) / len(scores)))
    return f"first:{result['ranking'][0]}"


def judge_agreement(store: Any, arena_records: Sequence[Any], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """An arena run's judge against the humans on the same pairwise items.

    Items are matched on (model pair, sample id); a judge's turns are averaged into one outcome. Each
    human judgment is compared with the judge's outcome (win for either model, or tie; "both bad"
    counts as a tie, as in the win rates). Reports agreement and kappa with ties, agreement without
    the items either side called a tie (as MT-Bench does), the judge's position-bias rates on these
    items (inconsistent across orders; preferred the first-shown answer in both orders), and how
    often humans chose the left answer when they chose one.
    """
    if store.mode != "pairwise":
        return {"error": "judge agreement needs a pairwise project"}
    judged: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in arena_records:
        meta = r.sample.metadata
        if r.score is None or r.score.values.get("win_a") is None or "model_a" not in meta:
            continue
        pair = sorted([meta["model_a"], meta["model_b"]])
        win_first = r.score.values["win_a"] if meta["model_a"] == pair[0] else 1.0 - r.score.values["win_a"]
        judged.setdefault((pair[0], pair[1], str(meta["sample_id"])), []).append({**r.score.values, "v": win_first})
    items = {it["key"]: it for it in store.items()}
    human, machine, inconsistent, first_bias = [], [], [], []
    for j in store.judgments():
        it = items[j["item"]]
        m0, m1 = j["result"]["models"]
        turns = judged.get((m0, m1, str(it["sample_id"])))
        if not turns:
            continue
        v = float(np.mean([t["v"] for t in turns]))
        machine.append("first" if v > 0.5 else "second" if v < 0.5 else "tie")
        hv = j["result"]["value"]
        human.append("first" if hv == 1.0 else "second" if hv == 0.0 else "tie")
        inconsistent.append(float(np.mean([t.get("inconsistent", 0.0) for t in turns])))
        first_bias.append(float(np.mean([t.get("first_position_bias", 0.0) for t in turns])))
    out: dict[str, Any] = {"n": len(human)}
    if not human:
        return out
    out["with_ties"] = pair_stats(human, machine, n_boot, seed)
    decided = [i for i, (h, m) in enumerate(zip(human, machine)) if "tie" not in (h, m)]
    out["without_ties"] = {"n": len(decided), "agreement": _num(percent_agreement([human[i] for i in decided],
                                                                                  [machine[i] for i in decided]))}
    out["judge_position_inconsistency"] = _num(float(np.mean(inconsistent)))
    out["judge_first_position_bias"] = _num(float(np.mean(first_bias)))
    out["human_left_rate"] = human_left_rate(store)
    return out


def human_left_rate(store: Any) -> dict[str, Any]:
    """Share of decided pairwise verdicts that picked the left (first shown) answer; 0.5 means no side bias."""
    picks = [float(j["verdict"]["choice"] == "A") for j in store.judgments() if j["verdict"]["choice"] in ("A", "B")]
    if not picks:
        return {"n": 0, "rate": None, "ci": [None, None]}
    arr = np.array(picks)
    return {"n": len(picks), "rate": _num(float(arr.mean())),
            "ci": list(bootstrap(lambda i: float(arr[i].mean()), len(arr)))}
