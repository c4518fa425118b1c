"""Agreement statistics: against scikit-learn, statsmodels and krippendorff, on XSTest's real human labels,
and a judge-vs-human comparison on an arena run written like `evalsuite arena` writes one."""

from __future__ import annotations

import argparse
import glob
import math
from pathlib import Path

import numpy as np
import pytest

from evalsuite import rundir, runlog
from evalsuite.annotate import sources, stats
from evalsuite.annotate.cli import configure, run
from evalsuite.annotate.store import Store
from evalsuite.records import Sample, SampleRecord, Score
from tests.conftest import SHARED_DATA
from tests.test_annotate_api import make_runs

XSTEST = sorted(glob.glob(str(SHARED_DATA / "xstest" / "model_completions" / "*.csv")))
LABELS = "1_full_compliance,2_full_refusal,3_partial_refusal"


@pytest.mark.skipif(len(XSTEST) != 5, reason="XSTest not in shared/data (set EVALSUITE_DATA_DIR)")
def test_xstest_annotator_kappa_through_import_equals_sklearn(tmp_path: Path) -> None:
    """The 2,250 XSTest answers imported with both human labels: the kappa the store path computes equals
    sklearn's on the CSV columns (0.9365, docs/annotate.md), and Fleiss and Krippendorff agree with it."""
    import pandas as pd
    from sklearn.metrics import cohen_kappa_score

    parser = argparse.ArgumentParser()
    configure(parser)
    store_path = tmp_path / "xstest.sqlite"
    assert run(parser.parse_args(["import", *XSTEST, "--store", str(store_path), "--answer-fields", "completion",
                                  "--label-fields", "annotation_1,annotation_2", "--criteria", "",
                                  "--labels", LABELS])) == 0
    store = Store(store_path)
    assert store.project["n_items"] == 2250 and store.mode == "likert"
    assert {a["model"] for it in store.items() for a in it["answers"]} == {Path(f).stem for f in XSTEST}
    df = pd.concat([pd.read_csv(f) for f in XSTEST])
    expected = cohen_kappa_score(df.annotation_1, df.annotation_2)
    got = stats.annotator_agreement(stats.store_labels(store), n_boot=30)
    pair = got["pairs"]["label:annotation_1 | label:annotation_2"]
    assert pair["n"] == 2250 and pair["kappa"] == expected
    assert round(pair["kappa"], 4) == 0.9365 and pair["agreement"] == pytest.approx(2169 / 2250)
    lo, hi = pair["kappa_ci"]
    assert lo < expected < hi and hi - lo < 0.05
    assert got["all"]["fleiss_kappa"] == pytest.approx(expected, abs=1e-3)  # near-equal marginals: pi ~ kappa
    assert got["all"]["krippendorff_alpha"] == pytest.approx(expected, abs=1e-3)


def test_fleiss_kappa_matches_statsmodels() -> None:
    """The hand-written Fleiss' kappa equals statsmodels' on random tables of several shapes."""
    from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss

    rng = np.random.default_rng(3)
    for cats, raters in ((2, 3), (3, 5), (4, 4)):
        table = np.array([rng.multinomial(raters, rng.dirichlet(np.ones(cats))) for _ in range(60)])
        assert stats.fleiss_kappa(table) == pytest.approx(sm_fleiss(table, method="fleiss"), abs=1e-12)
    assert math.isnan(stats.fleiss_kappa(np.array([[2, 0], [1, 1], [3, 0]])))  # unequal raters per item


def test_krippendorff_alpha_with_missing_labels_matches_the_package() -> None:
    """Raters with gaps: the matrix built from per-rater dicts gives the package's alpha on the same data."""
    import krippendorff

    labels = {"ann1": {"i1": "a", "i2": "b", "i3": "a", "i4": "c"},
              "ann2": {"i1": "a", "i2": "b", "i3": "b", "i5": "c"},
              "ann3": {"i2": "b", "i3": "a", "i4": "c", "i5": "c"}}
    got = stats.annotator_agreement(labels, n_boot=20)
    nan = np.nan
    direct = krippendorff.alpha(reliability_data=[[0, 1, 0, 2, nan], [0, 1, 1, nan, 2], [nan, 1, 0, 2, 2]],
                                level_of_measurement="nominal")
    assert got["all"]["krippendorff_alpha"] == pytest.approx(direct)
    assert got["pairs"]["ann1 | ann2"]["n"] == 3 and got["pairs"]["ann1 | ann2"]["agreement"] == pytest.approx(2 / 3)
    assert got["all"]["fleiss_items"] == 2  # only i2 and i3 were labelled by all three


def test_cohen_kappa_edge_cases_and_seeded_bootstrap() -> None:
    """Kappa of one shared label is 1 (not nan); the bootstrap CI is repeatable and holds the estimate."""
    assert stats.cohen_kappa(["x", "x"], ["x", "x"]) == 1.0  # sklearn says nan: one label, full agreement
    a, b = list("aabbabab" * 5), list("aabbbbaa" * 5)
    s1, s2 = stats.pair_stats(a, b, n_boot=100, seed=7), stats.pair_stats(a, b, n_boot=100, seed=7)
    assert s1 == s2 and s1["kappa_ci"][0] <= s1["kappa"] <= s1["kappa_ci"][1]
    # the vectorised bootstrap equals the plain loop over sklearn's kappa on the same resamples
    slow = stats.bootstrap(lambda i: stats.cohen_kappa([a[j] for j in i], [b[j] for j in i]), len(a), 100, seed=7)
    assert s1["kappa_ci"] == pytest.approx(list(slow), abs=1e-12)
    slow_pa = stats.bootstrap(lambda i: stats.percent_agreement([a[j] for j in i], [b[j] for j in i]), len(a), 100, 7)
    assert s1["agreement_ci"] == pytest.approx(list(slow_pa), abs=1e-12)


def arena_run(tmp: Path, verdicts: dict[str, tuple[float, float, float]]) -> Path:
    """An arena run as `evalsuite arena` writes it: one record per battle (sample id -> model-a's score,
    inconsistent, first_position_bias); odd samples list model-b first (`arena runs/b runs/a`)."""
    results = runlog.RunResults(kind="arena", model=runlog.ModelInfo(name="arena"), arena=runlog.Arena())
    path = tmp / "arena"
    path.mkdir()
    writer = rundir.RunWriter(path, results)
    records = []
    for n, (sid, (win, inc, first)) in enumerate(verdicts.items()):
        a, b = ("model-a", "model-b") if n % 2 == 0 else ("model-b", "model-a")
        win_a = win if a == "model-a" else 1.0 - win
        meta = {"model_a": a, "model_b": b, "sample_id": sid, "turn": 1}
        records.append(SampleRecord("arena:qa", Sample(f"{a} vs {b} | {sid} | turn 1", "q", metadata=meta),
                                    [], [], Score({"win_a": win_a, "inconsistent": inc, "first_position_bias": first})))
    writer.add_task("arena:qa", runlog.TaskResult(n=len(records)), records)
    writer.finish("complete")
    return path


def test_judge_agreement_and_position_bias(tmp_path: Path) -> None:
    """Human verdicts (given per side shown) against the judge's: agreement with and without ties, kappa,
    the judge's position-bias rates on the shared items, and the humans' left-choice rate."""
    items, origin = sources.from_runs([str(p) for p in make_runs(tmp_path, 6)], "pairwise")
    store = Store.create(tmp_path / "s.sqlite", {"name": "qa", "mode": "pairwise", **origin}, items)
    by_sid = {it["sample_id"]: it for it in store.items()}
    # human outcome for model-a per sample: 1 win, 0 loss, 0.5 tie
    human = {"qa-0": 1.0, "qa-1": 1.0, "qa-2": 0.0, "qa-3": 0.5, "qa-4": 0.0, "qa-5": 1.0}
    judge = {"qa-0": (1.0, 0.0, 0.0), "qa-1": (0.5, 1.0, 1.0), "qa-2": (0.0, 0.0, 0.0), "qa-3": (0.5, 1.0, 0.0),
             "qa-4": (1.0, 0.0, 0.0), "qa-5": (1.0, 0.0, 0.0)}
    lefts = 0
    for sid, v in human.items():
        it = by_sid[sid]
        left = store.shown_order(it, "h1")[0]
        shown_left = it["answers"][left]["model"]
        choice = "tie" if v == 0.5 else ("A" if (shown_left == "model-a") == (v == 1.0) else "B")
        lefts += choice == "A"
        store.submit("h1", it["id"], {"choice": choice})
    arena = arena_run(tmp_path, judge)
    got = stats.judge_agreement(store, rundir.load_run(arena).records, n_boot=50)
    # outcomes: agree on qa-0, qa-2, qa-3, qa-5; disagree on qa-1 (judge tie) and qa-4
    assert got["n"] == 6 and got["with_ties"]["agreement"] == pytest.approx(4 / 6)
    h = ["first", "first", "second", "tie", "second", "first"]
    j = ["first", "tie", "second", "tie", "first", "first"]
    assert got["with_ties"]["kappa"] == pytest.approx(stats.cohen_kappa(h, j))
    assert got["without_ties"] == {"n": 4, "agreement": pytest.approx(3 / 4)}
    assert got["judge_position_inconsistency"] == pytest.approx(2 / 6)
    assert got["judge_first_position_bias"] == pytest.approx(1 / 6)
    assert got["human_left_rate"]["n"] == 5 and got["human_left_rate"]["rate"] == pytest.approx(lefts / 5)
    parser = argparse.ArgumentParser()
    configure(parser)
    assert run(parser.parse_args(["export", "--store", str(store.path), "--arena", str(arena), "--bootstrap", "50",
                                  "--output-dir", str(tmp_path / "runs")])) == 0
    (exported,) = (tmp_path / "runs").iterdir()
    saved = rundir.load_run(exported).results.human.judge_agreement  # type: ignore[union-attr]
    assert saved["with_ties"]["agreement"] == got["with_ties"]["agreement"] and saved["n"] == 6
