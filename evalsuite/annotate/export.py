"""Judgments out of a store: a run dir with the typed `human` section, and battles for the arena.

Win rates count a tie and "both bad" as half a win (Chatbot Arena's convention); every CI is a
seeded percentile bootstrap over judgments. Rankings also yield battles: a ranking of k answers is
the k(k-1)/2 pairwise outcomes it implies, so `evalsuite arena --human` rates ranked runs too.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from evalsuite.annotate import stats
from evalsuite.annotate.store import Store


def human_battles(store_path: str | Path) -> list[tuple[str, str, float]]:
    """(model_a, model_b, score of a) for every live pairwise or ranking judgment in the store."""
    store = Store(store_path)
    out: list[tuple[str, str, float]] = []
    for j in store.judgments():
        r = j["result"]
        if store.mode == "pairwise":
            out.append((r["models"][0], r["models"][1], float(r["value"])))
        elif store.mode == "ranking":
            out.extend((a, b, 1.0) for a, b in itertools.combinations(r["ranking"], 2))
    return out


def _mean_ci(values: list[float], n_boot: int, seed: int) -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    lo, hi = stats.bootstrap(lambda i: float(arr[i].mean()), len(arr), n_boot, seed)
    return {"mean": round(float(arr.mean()), 6) if len(arr) else None, "lo": lo, "hi": hi, "n": len(arr)}


def summarize(store: Store, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The numbers of the `human` section for the store's mode, and annotator agreement."""
    judgments = store.judgments()
    out: dict[str, Any] = {"project": store.project.get("name"), "mode": store.mode,
                           "annotators": sorted({j["annotator"] for j in judgments}), "judgments": len(judgments),
                           "skipped": len(store.judgments(kind="skip")), "items": store.project.get("n_items"),
                           "criteria": store.project.get("criteria") or [], "store": str(store.path.resolve())}
    if store.mode == "pairwise":
        pairs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for j in judgments:
            pairs.setdefault(tuple(j["result"]["models"]), []).append(j["result"])  # type: ignore[arg-type]
        out["win_rates"] = {
            f"{a} vs {b}": {"model_a": a, "model_b": b, **{k: v for k, v in _mean_ci(
                [r["value"] for r in rs], n_boot, seed).items() if k != "mean"},
                "win_rate_a": round(float(np.mean([r["value"] for r in rs])), 6),
                "wins_a": sum(r["winner"] == a for r in rs), "wins_b": sum(r["winner"] == b for r in rs),
                "ties": sum(r["outcome"] == "tie" for r in rs), "both_bad": sum(r["outcome"] == "both_bad" for r in rs)}
            for (a, b), rs in sorted(pairs.items())}
        out["left_rate"] = stats.human_left_rate(store)
    elif store.mode == "likert":
        crit = store.project.get("criteria") or []
        out["likert"] = {c: _mean_ci([j["result"]["scores"][c] for j in judgments], n_boot, seed) for c in crit}
        models = sorted({j["result"]["model"] for j in judgments})
        out["likert_by_model"] = {m: {c: _mean_ci([j["result"]["scores"][c] for j in judgments
                                                   if j["result"]["model"] == m], n_boot, seed) for c in crit}
                                  for m in models}
        if store.project.get("labels"):
            counts: dict[str, dict[str, int]] = {}
            for j in judgments:
                row = counts.setdefault(j["result"]["model"], {label: 0 for label in store.project["labels"]})
                row[j["result"]["label"]] += 1
            out["labels"] = counts
    else:
        ranks: dict[str, list[float]] = {}
        for j in judgments:
            for pos, m in enumerate(j["result"]["ranking"], 1):
                ranks.setdefault(m, []).append(float(pos))
        out["ranking"] = {m: {**{("mean_rank" if k == "mean" else k): v for k, v in _mean_ci(r, n_boot, seed).items()},
                              "first": sum(x == 1.0 for x in r) / len(r)} for m, r in sorted(ranks.items())}
    out["agreement"] = stats.annotator_agreement(stats.store_labels(store), n_boot, seed)
    return out


def write_export(store: Store, output_dir: str | Path, n_boot: int = 1000, seed: int = 0,
                 extra: dict[str, Any] | None = None) -> Path:
    """A run dir (kind "human") holding the summary (plus `extra` keys, e.g. judge agreement) and one
    sample record per live judgment."""
    from evalsuite import rundir, runlog
    from evalsuite.records import Sample, SampleRecord, Score

    summary = {**summarize(store, n_boot, seed), **(extra or {})}
    name = str(store.project.get("name") or "annotate")
    out = rundir.new_run_dir(output_dir, "human", [name])
    task = f"human:{store.project.get('task') or name}"
    items = {it["key"]: it for it in store.items()}
    records = []
    for j in store.judgments():
        it = items[j["item"]]
        r = j["result"]
        if store.mode == "pairwise":
            values: dict[str, float | None] = {"win_a": r["value"]}
        elif store.mode == "likert":
            values = {k: float(v) for k, v in r["scores"].items()}
        else:
            values = {f"rank.{m}": float(p) for p, m in enumerate(r["ranking"], 1)}
        meta = {"item": it["key"], "sample_id": it["sample_id"], "annotator": j["annotator"], "shown": j["shown"],
                "verdict": j["verdict"], "result": r, "elapsed_ms": j["elapsed_ms"], "submitted_at": j["submitted_at"],
                "labels": it.get("labels") or {}}
        sample = Sample(f"{it['key']} | {j['annotator']}", "\n\n".join(it["prompt"]), metadata=meta)
        records.append(SampleRecord(task, sample, [], [], Score(values, r.get("winner") or r.get("label"))))
    metrics: dict[str, runlog.Metric] = {}
    for c, m in (summary.get("likert") or {}).items():
        arr = [float(j["result"]["scores"][c]) for j in store.judgments()]
        metrics[c] = runlog.metric(m["mean"], _stderr(arr), m["n"])
    for m, s in (summary.get("ranking") or {}).items():
        metrics[f"mean_rank.{m}"] = runlog.metric(s["mean_rank"], None, s["n"], higher_is_better=False)
    results = runlog.RunResults(
        kind="human", created=runlog.now(), environment=runlog.environment(),
        model=runlog.ModelInfo(name=f"human:{name}", backend="human"),
        config={"store": str(store.path.resolve()), "project": store.project.get("id"), "bootstrap": n_boot,
                "seed": seed, "sources": store.project.get("sources", []), "models": store.project.get("models", []),
                "task": store.project.get("task")},
        human=runlog.Human(**summary))
    writer = rundir.RunWriter(out, results)
    writer.add_task(task, runlog.TaskResult(n=len(records), metrics=metrics, config={"mode": store.mode}), records)
    writer.finish("complete")
    return out


def _stderr(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


class ExportedProject:
    """An exported run dir (kind "human") read back as the judgments of a store: what `stats` and the
    compare report need (`mode`, `project`, `items()`, `judgments()`), so an export can stand in for the
    SQLite file it came from (e.g. in CI, where only the run dir was kept)."""

    def __init__(self, path: str | Path) -> None:
        from evalsuite import rundir
        from evalsuite.errors import UsageError

        log = rundir.load_run(path)
        if log.results.kind != "human" or log.results.human is None:
            raise UsageError(f"{path} is a run of kind '{log.results.kind}', not an `evalsuite annotate export` "
                             "run dir; pass the annotation store (.sqlite) or its export")
        self.path = Path(path)
        self.summary: dict[str, Any] = log.results.human.model_dump()
        cfg = log.results.config
        self.project: dict[str, Any] = {"name": self.summary.get("project"), "mode": self.summary.get("mode"),
                                        "sources": cfg.get("sources") or [], "models": cfg.get("models") or [],
                                        "task": cfg.get("task"), "n_items": self.summary.get("items"),
                                        "criteria": self.summary.get("criteria") or []}
        self._items: dict[str, dict[str, Any]] = {}
        self._judgments: list[dict[str, Any]] = []
        for r in log.records:
            meta = r.sample.metadata
            if "result" not in meta or "item" not in meta:
                continue
            self._items.setdefault(meta["item"], {"key": meta["item"], "sample_id": meta.get("sample_id"),
                                                  "labels": meta.get("labels") or {}})
            self._judgments.append({"item": meta["item"], "annotator": meta.get("annotator"), "result": meta["result"],
                                    "verdict": meta.get("verdict") or {}, "shown": meta.get("shown") or [],
                                    "kind": "judgment"})

    @property
    def mode(self) -> str:
        return str(self.project["mode"])

    def items(self) -> list[dict[str, Any]]:
        return list(self._items.values())

    def judgments(self, kind: str | None = "judgment") -> list[dict[str, Any]]:
        return self._judgments if kind in (None, "judgment") else []
