"""`evalsuite compare`: pairing by (task, id), CIs and p-values against scipy/statsmodels, refusals, outputs."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from evalsuite import stats
from evalsuite.cli import main
from evalsuite.errors import UsageError
from evalsuite.reports.compare import compare, load_runs
from evalsuite.rundir import load_run
from evalsuite.reports.markdown import render_markdown
from tests.fixtures_runs import SynthTask, binary, flip, write_run

N = 300


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path, list[float], list[float]]:
    """Baseline and candidate on the same 300 samples; the candidate loses 25 and gains 8."""
    a = binary(N, 0.6, seed=1)
    b = flip(a, down=25, up=8, seed=2)
    subj = ["algebra", "biology", "chemistry"] * (N // 3)
    cont_a = [0.3 * v + 0.1 * (i % 7) for i, v in enumerate(a)]
    cont_b = [0.3 * v + 0.1 * (i % 7) + (0.02 if i % 3 else -0.01) for i, v in enumerate(b)]
    pa = write_run(tmp_path / "a", {"qa": SynthTask({"acc": a, "f1": cont_a}, groups=subj)}, model="base")
    pb = write_run(tmp_path / "b", {"qa": SynthTask({"acc": b, "f1": cont_b}, groups=subj)}, model="cand")
    return pa, pb, a, b


def test_mcnemar_pvalue_matches_scipy_and_statsmodels(pair: tuple) -> None:
    from scipy.stats import binomtest

    pa, pb, a, b = pair
    row = compare(load_runs([pa, pb])).find("qa", "acc")
    assert row is not None
    test = row.tests[1]
    assert (test.method, test.a_only, test.b_only) == ("mcnemar-exact", 25, 8)
    assert test.pvalue == pytest.approx(binomtest(8, 33, 0.5).pvalue, rel=1e-12)
    sm = pytest.importorskip("statsmodels.stats.contingency_tables", reason="statsmodels not installed")
    table = [[sum(x == 1 and y == 1 for x, y in zip(a, b)), 25], [8, sum(x == 0 and y == 0 for x, y in zip(a, b))]]
    assert test.pvalue == pytest.approx(sm.mcnemar(table, exact=True).pvalue, rel=1e-9)
    assert test.delta == pytest.approx((8 - 25) / N)
    assert test.lo < test.delta < test.hi < 0  # a real loss: the CI excludes zero


def test_wilson_ci_matches_statsmodels(pair: tuple) -> None:
    proportion = pytest.importorskip("statsmodels.stats.proportion", reason="statsmodels not installed")
    pa, pb, a, _ = pair
    est = compare(load_runs([pa, pb])).find("qa", "acc").estimates[0]
    lo, hi = proportion.proportion_confint(int(sum(a)), N, alpha=0.05, method="wilson")
    assert (est.method, est.n) == ("wilson", N)
    assert (est.lo, est.hi) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))


def test_paired_bootstrap_agrees_with_scipy_references(pair: tuple) -> None:
    """Bootstrap p ~ paired t-test p at this n, and its CI ~ scipy's percentile bootstrap of the differences."""
    import numpy as np
    from scipy.stats import bootstrap, ttest_rel

    pa, pb, _, _ = pair
    comp = compare(load_runs([pa, pb]), n_boot=20_000)
    row = comp.find("qa", "f1")
    test = row.tests[1]
    assert test.method == "paired-bootstrap"
    va = {r.sample.id: r.score.values["f1"] for r in comp.runs[0].records}
    vb = {r.sample.id: r.score.values["f1"] for r in comp.runs[1].records}
    x, y = np.array([va[k] for k in va]), np.array([vb[k] for k in va])
    assert test.delta == pytest.approx(float((y - x).mean()))
    ref_p = ttest_rel(y, x).pvalue
    assert abs(math.log10(test.pvalue) - math.log10(ref_p)) < 0.35, (test.pvalue, ref_p)
    ref = bootstrap(((y - x),), np.mean, n_resamples=20_000, method="percentile", random_state=0).confidence_interval
    assert test.lo == pytest.approx(ref.low, abs=0.004) and test.hi == pytest.approx(ref.high, abs=0.004)


def test_pairs_by_id_not_by_order(tmp_path: Path) -> None:
    """Samples stored in another order (or a parallel run) pair up by (task, id)."""
    a = binary(120, 0.5, seed=3)
    ids = [f"s{i}" for i in range(120)]
    pa = write_run(tmp_path / "a", {"t": SynthTask({"acc": a}, ids=ids)})
    pb = write_run(tmp_path / "b", {"t": SynthTask({"acc": a}, ids=ids)}, model="model-b")
    samples = pb / "samples.jsonl"  # the same samples, stored in the reverse order
    samples.write_text("".join(reversed(samples.read_text().splitlines(keepends=True))))
    assert load_runs([pb, pb])[0].records[0].sample.id == "s119"
    test = compare(load_runs([pa, pb])).find("t", "acc").tests[1]
    assert (test.a_only, test.b_only, test.pvalue) == (0, 0, 1.0)


def test_subtask_rows_and_changed_samples(pair: tuple) -> None:
    pa, pb, _, _ = pair
    comp = compare(load_runs([pa, pb]))
    groups = sorted({r.group for r in comp.rows if r.group})
    assert groups == ["algebra", "biology", "chemistry"]
    sub = comp.find("qa", "acc", "biology")
    assert sub.estimates[0].n == N // 3
    assert sum(comp.find("qa", "acc", g).tests[1].a_only for g in groups) == 25
    assert sorted(c.direction for c in comp.changed).count("lost") == 25
    assert len(comp.changed) == 33 and all(c.outputs[0] and c.prompt for c in comp.changed)


def test_mismatched_samples_are_refused_with_ids(tmp_path: Path) -> None:
    a = binary(50, 0.5, seed=1)
    pa = write_run(tmp_path / "a", {"t": SynthTask({"acc": a})})
    pb = write_run(tmp_path / "b", {"t": SynthTask({"acc": a[:48], "x": a[:48]}, ids=[f"t-{i}" for i in range(48)])})
    with pytest.raises(UsageError) as err:
        compare(load_runs([pa, pb]))
    msg = str(err.value)
    assert "sample sets differ" in msg and "'t-48'" in msg and "'t-49'" in msg and "--allow-mismatch" in msg
    comp = compare(load_runs([pa, pb]), allow_mismatch=True)
    assert any("sample sets differ" in w and "compared anyway" in w for w in comp.warnings)
    assert comp.find("t", "acc").tests[1].n == 48


def test_version_and_task_mismatch_refused(tmp_path: Path) -> None:
    a = binary(20, 0.5, seed=1)
    pa = write_run(tmp_path / "a", {"t": SynthTask({"acc": a}), "u": SynthTask({"acc": a})})
    pb = write_run(tmp_path / "b", {"t": SynthTask({"acc": a}, version="2")})
    with pytest.raises(UsageError, match=r"version differs \(model-a: 1, .*: 2\).*only in .*\['u'\]|tasks differ"):
        compare(load_runs([pa, pb]))
    with pytest.raises(UsageError, match="version differs"):
        compare(load_runs([pa, pb]), tasks=["t"])
    with pytest.raises(UsageError, match=r"has no results for task\(s\) \['u'\]"):
        compare(load_runs([pa, pb]), tasks=["u"])
    partial = write_run(tmp_path / "p", {"t": SynthTask({"acc": a})}, status="interrupted")
    with pytest.raises(UsageError, match=r"is not a complete run \(status: interrupted\)"):
        compare(load_runs([pa, partial]), tasks=["t"])


def test_three_runs_and_aggregate_only_metric(tmp_path: Path) -> None:
    a = binary(80, 0.5, seed=1)
    extra = {"metrics": {"pass@10": {"value": 0.7, "stderr": 0.05, "n": 80}}}
    runs = [write_run(tmp_path / f"r{i}", {"t": SynthTask({"acc": flip(a, i, 0, i)}, extra=extra)}, model=f"m{i}")
            for i in range(3)]
    comp = compare(load_runs(runs))
    assert comp.labels == ["m0", "m1", "m2"] and len(comp.find("t", "acc").tests) == 3
    row = comp.find("t", "pass@10")  # only in results.json: shown, no paired test
    assert row.tests[1] is None and row.estimates[0].method == "normal" and row.delta(2) == 0.0


def test_trainer_run_reads_its_best_checkpoint_samples(tmp_path: Path) -> None:
    """A trainer run dir has no samples.jsonl: `load_run` reads the best checkpoint's eval runs.

    Catches: compare reading a key the trainer does not write (it wrote `eval_runs`, compare read
    `eval_run`, and `compare BASE TRAIN_RUN` failed with "sample sets differ")."""
    from evalsuite import rundir, runlog

    a = binary(60, 0.5, seed=1)
    base = write_run(tmp_path / "base", {"t": SynthTask({"acc": a})})
    train = tmp_path / "train"
    write_run(train / "evals" / "step-200" / "t", {"t": SynthTask({"acc": flip(a, 2, 9, seed=3)})}, model="sft")
    sections = rundir.load_results(train / "evals" / "step-200" / "t").tasks
    runs = ["evals/step-200/t"]
    results = runlog.RunResults(kind="training", model=runlog.ModelInfo(name="train@step-200"), tasks=sections,
                                training=runlog.Training(
                                    steps=[runlog.Checkpoint(step=200, train_loss=1.0, scores={"t/acc": 0.6}, eval_runs=runs)],
                                    best=runlog.Best(step=200, metric="t/acc", value=0.6, eval_runs=runs)))
    rundir.RunWriter(train, results).finish("complete")
    test = compare(load_runs([base, train])).find("t", "acc").tests[1]
    assert (test.a_only, test.b_only) == (2, 9)
    assert list(load_run(train).checkpoints()["step"]) == [200]


def test_legacy_results_json_still_loads(tmp_path: Path) -> None:
    """results.json as the untyped writers wrote it (no schema_version, top-level versions, a trainer's
    `best.eval_runs`) loads through the typed log; a newer schema or a wrong shape is one line naming the file."""
    import json

    from evalsuite import rundir

    a = binary(40, 0.5, seed=1)
    base = write_run(tmp_path / "base", {"t": SynthTask({"acc": a})})
    train = tmp_path / "train"
    write_run(train / "evals" / "step-30", {"t": SynthTask({"acc": flip(a, 1, 4, seed=2)})}, model="sft")
    legacy = {"model": {"name": "SmolLM2", "backend": "hf"}, "config": {}, "versions": {"python": "3.11"},
              "git_sha": None, "platform": "Linux", "created": "2026-11-29T10:00:00+0000", "status": "complete",
              "chat_template": "{{ x }}",
              "tasks": {"t": {"version": "1", "n": 40, "group_by": None, "config": {"num_fewshot": 0}, "errors": 0,
                              "metrics": {"acc": {"value": sum(flip(a, 1, 4, seed=2)) / 40, "stderr": 0.07, "n": 40},
                                          "judge_error": {"value": 0.0, "stderr": 0.0, "n": 40}}}},
              "training": {"steps": [{"step": 30, "train_loss": 1.2, "val_loss": None, "scores": {"t/acc": 0.5},
                                      "checkpoint": "checkpoints/step-30", "eval_runs": ["evals/step-30"]}],
                           "best": {"step": 30, "metric": "t/acc", "value": 0.5, "checkpoint": "checkpoints/step-30",
                                    "eval_runs": ["evals/step-30"]}, "max_steps": 30, "tokens": 1000}}
    (train / "results.json").write_text(json.dumps(legacy))
    run = load_run(train)
    assert run.results.kind == "training" and run.results.environment.versions == {"python": "3.11"}
    assert run.tasks["t"].metrics["judge_error"].higher_is_better is False  # old runs: the old name rule
    assert compare(load_runs([base, train]), allow_mismatch=True).find("t", "acc").tests[1].b_only >= 1
    (train / "results.json").write_text(json.dumps({**legacy, "schema_version": 99}))
    with pytest.raises(UsageError, match="newer evalsuite"):
        rundir.load_results(train)
    (train / "results.json").write_text(json.dumps({"schema_version": 2, "tasks": {"t": {"metrics": {"acc": 3}}}}))
    with pytest.raises(UsageError, match=r"results.json is not an evalsuite results file \(tasks.t.metrics.acc"):
        rundir.load_results(train)


def test_cli_table_markdown_and_errors(pair: tuple, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    from markdown_it import MarkdownIt  # ships with rich

    pa, pb, _, _ = pair
    assert main(["compare", str(pa), str(pb), "--n-boot", "2000"]) == 0
    out = capsys.readouterr().out
    assert "qa" in out and "0.6" in out and "biology" in out and "McNemar" in out
    assert main(["compare", str(pa), str(pb), "--format", "markdown", "--no-groups", "--n-boot", "2000"]) == 0
    md = capsys.readouterr().out.split("### Behaviour")[0]  # the scores (the Behaviour block follows)
    html = MarkdownIt("commonmark").enable("table").render(md)
    assert html.count("<table>") == 1 and html.count("<tr>") == 1 + 2  # header + 2 metrics, no subtask rows
    assert main(["compare", str(pa), str(pb), "--format", "markdown", "--n-boot", "2000"]) == 0
    html = MarkdownIt("commonmark").enable("table").render(capsys.readouterr().out.split("### Behaviour")[0])
    assert html.count("<tr>") == 1 + 2 + 3 * 2  # header + 2 metrics + 6 subtask rows
    report = tmp_path / "out" / "report.html"
    assert main(["compare", str(pa), str(pb), "--no-groups", "--n-boot", "500", "--html", str(report)]) == 0
    assert report.read_text(encoding="utf-8").startswith("<!DOCTYPE html>") and "wrote HTML report" in capsys.readouterr().err
    assert main(["compare", str(pa), str(pb), "--no-groups", "--html", str(report), "--arena", str(pa)]) == 2
    assert "has no arena ratings" in capsys.readouterr().err
    assert main(["compare", str(pa), str(tmp_path / "nope")]) == 2
    assert "not an evalsuite run directory" in capsys.readouterr().err


def test_markdown_escapes_pipes(tmp_path: Path) -> None:
    """Names with '|' stay inside their cell: every rendered row has as many cells as the header."""
    from markdown_it import MarkdownIt

    a = binary(30, 0.5, seed=1)
    pa = write_run(tmp_path / "a", {"t|x": SynthTask({"acc": a})}, model="a|b")
    pb = write_run(tmp_path / "b", {"t|x": SynthTask({"acc": a})}, model="c")
    html = MarkdownIt("commonmark").enable("table").render(render_markdown(compare(load_runs([pa, pb]))))
    assert ">a|b (95% CI)</th>" in html and "<td>t|x</td>" in html and "<code>a|b</code>" in html
    rows = html.split("<tr>")[1:]
    # the scores' header and row, then the Behaviour block's header and its 7 diagnostics
    assert len(rows) == 2 + 1 + 7 and {len(re.findall(r"<t[hd][ >]", r)) for r in rows} == {6}  # not <thead>


def test_score_ci_degenerate_cases() -> None:
    assert stats.wilson_ci(0, 10)[0] == 0.0 and stats.wilson_ci(10, 10)[1] == 1.0
    assert stats.paired_test([1.0, 0.0], [1.0, 0.0]).pvalue == 1.0
    same = stats.paired_bootstrap([0.2, 0.4], [0.3, 0.5])
    assert same.method == "identical" and same.delta == pytest.approx(0.1)


@pytest.mark.parametrize("kind", ["continuous", "graded"])
def test_bootstrap_paths_match_scipy(kind: str) -> None:
    """Both resampling paths (indices; multinomial counts of few distinct values) give scipy's CI."""
    import numpy as np
    from scipy.stats import bootstrap

    rng = np.random.default_rng(7)
    a = rng.random(400) if kind == "continuous" else rng.integers(1, 11, 400) / 10
    b = a + (rng.normal(0.03, 0.2, 400) if kind == "continuous" else rng.choice([-0.1, 0, 0.1, 0.2], 400))
    test = stats.paired_bootstrap(list(a), list(b), n_boot=20_000, seed=1)
    ref = bootstrap((b - a,), np.mean, n_resamples=20_000, method="percentile", random_state=1).confidence_interval
    assert test.lo == pytest.approx(ref.low, abs=0.003) and test.hi == pytest.approx(ref.high, abs=0.003)
    assert test.delta == pytest.approx(float((b - a).mean()))


def _training_run(tmp_path: Path, scores: dict[int, list[float]]) -> Path:
    """A training run as the trainer leaves it: one eval run per checkpoint, the run log naming them."""
    from evalsuite import rundir, runlog

    train = tmp_path / "train"
    steps = []
    for step, values in scores.items():
        sub = f"evals/step-{step}"
        write_run(train / sub, {"t": SynthTask({"acc": values})}, model=f"t+step-{step}")
        steps.append(runlog.Checkpoint(step=step, scores={"t/acc": sum(values) / len(values)}, eval_runs=[sub]))
    best = max(steps, key=lambda c: c.scores["t/acc"])
    results = runlog.RunResults(kind="training", model=runlog.ModelInfo(name="train"),
                                training=runlog.Training(steps=steps, best=runlog.Best(
                                    step=best.step, metric="t/acc", value=best.scores["t/acc"], eval_runs=best.eval_runs)))
    rundir.RunWriter(train, results).finish("complete")
    return train


def test_checkpoint_level_comparison(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`RUN@step-N` is one checkpoint; `compare RUN` is every checkpoint against the first, with a note when
    no checkpoint beats it significantly. Catches: checkpoints only reachable through the best one, and a
    "best" step chosen on noise without a word."""
    a = binary(40, 0.5, seed=4)
    train = _training_run(tmp_path, {0: a, 10: flip(a, 0, 1, seed=1), 20: flip(a, 1, 0, seed=2)})
    one = load_run(f"{train}@step-10")
    assert one.name == "train@step-10" and one.records and list(one.tasks) == ["t"]
    with pytest.raises(UsageError, match=r"no scored checkpoint at step 5 \(scored steps: 0, 10, 20\)"):
        load_run(f"{train}@step-5")
    comp = compare(load_runs([train]), n_boot=200)
    assert comp.labels == ["train@step-0", "train@step-10", "train@step-20"]
    assert any("no checkpoint is significantly better than train@step-0" in w for w in comp.warnings)
    strong = _training_run(tmp_path / "s", {0: [0.0] * 40, 10: [1.0] * 30 + [0.0] * 10})
    assert any("significantly better than train@step-0 (p < 0.05): train@step-10" in w
               for w in compare(load_runs([strong]), n_boot=200).warnings)
    assert main(["compare", f"{train}@step-0", f"{train}@step-20", "--n-boot", "200"]) == 0
    assert "train@step-20" in capsys.readouterr().out
    base = write_run(tmp_path / "plain", {"t": SynthTask({"acc": a})})
    with pytest.raises(UsageError, match="not a training run with two or more scored checkpoints"):
        load_runs([base])


def _clustered(tmp_path: Path, name: str, followed: list[float], counts: list[float]) -> Path:
    ratio = sum(followed) / sum(counts)
    extra = {"metrics": {"inst_acc": {"value": ratio, "stderr": None, "n": int(sum(counts))}},
             "clusters": {"inst_acc": ["inst.followed", "inst.count"]}}
    return write_run(tmp_path / name, {"ifeval": SynthTask({"inst.followed": followed, "inst.count": counts},
                                                           extra=extra)}, model=name)


def test_clustered_metric_gets_a_paired_cluster_test(tmp_path: Path) -> None:
    """An instruction-level mean (sub-items clustered in prompts) gets a cluster-bootstrap CI and a paired cluster
    test, so the gate has a test for it. Catches: "no per-sample scores" (any drop over 1 point failed the gate,
    noise or not) and instructions treated as independent."""
    import random

    rng = random.Random(5)
    counts = [float(rng.randint(1, 3)) for _ in range(60)]
    base = [float(sum(rng.random() < 0.6 for _ in range(int(c)))) for c in counts]
    noise = list(base)
    for i in rng.sample(range(60), 4):  # a few prompts move by one instruction each way
        noise[i] = max(0.0, min(counts[i], noise[i] + rng.choice((-1.0, 1.0))))
    worse = [max(0.0, f - 1.0) if i % 2 == 0 else f for i, f in enumerate(base)]
    a, b, c = _clustered(tmp_path, "a", base, counts), _clustered(tmp_path, "b", noise, counts), _clustered(tmp_path, "c", worse, counts)
    row = compare(load_runs([a, b, c]), n_boot=2000).find("ifeval", "inst_acc")
    assert row.tests[1].method == "paired-cluster-bootstrap" and row.estimates[0].method == "cluster-bootstrap"
    assert row.estimates[0].value == pytest.approx(sum(base) / sum(counts))
    assert 0.0 <= row.estimates[0].lo < row.estimates[0].value < row.estimates[0].hi <= 1.0
    assert row.tests[1].pvalue > 0.05, "a few prompts moving both ways is noise"
    assert row.tests[2].pvalue < 0.01 and row.tests[2].delta < 0, "one instruction lost on half the prompts is not"
    # a run written before the task recorded the cluster parts keeps its stored score (normal CI, no test):
    # the gate then judges it by its drop alone instead of skipping it as "no score"
    old = write_run(tmp_path / "old", {"ifeval": SynthTask({"other": [1.0] * 60}, extra={
        "metrics": {"inst_acc": {"value": 0.5, "stderr": 0.04, "n": int(sum(counts))}}})}, model="old")
    mixed = compare(load_runs([old, a]), n_boot=200, allow_mismatch=True).find("ifeval", "inst_acc")
    assert mixed.estimates[0] is not None and mixed.estimates[0].method == "normal" and mixed.tests[1] is None


def test_partial_credit_ci_stays_in_range() -> None:
    """Scores in [0, 1] that are not 0/1 get a bootstrap CI inside [0, 1]; the normal one crossed 0 near the end."""
    values = [0.0] * 18 + [0.5, 0.25]
    est = stats.score_ci(values)
    assert est.method == "bootstrap" and 0.0 <= est.lo <= est.value <= est.hi <= 1.0
    lo, _ = stats.normal_ci(*stats.mean_stderr(values))
    assert lo < 0.0, "the old interval left the range here"


def test_reports_are_looked_up_by_name(pair: tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`--report FORMAT:PATH` picks a registered reporter; an unknown one is exit 2 before any work, and junit
    without a gate says so. Catches: reporters listed as a plugin group that nothing looks up by name."""
    pa, pb, _, _ = pair
    out = tmp_path / "r.md"
    assert main(["compare", str(pa), str(pb), "--n-boot", "200", "--report", f"markdown:{out}"]) == 0
    text = out.read_text()
    assert "| acc" in text or "acc |" in text, text[:500]
    capsys.readouterr()
    assert main(["compare", str(pa), str(pb), "--report", f"pdf:{tmp_path / 'x.pdf'}"]) == 2
    assert "unknown reporter 'pdf'" in capsys.readouterr().err
    assert main(["compare", str(pa), str(pb), "--n-boot", "200", "--report", f"junit:{tmp_path / 'j.xml'}"]) == 2
    assert "use it with `evalsuite gate --report junit:PATH`" in capsys.readouterr().err
    junit = tmp_path / "g.xml"
    assert main(["gate", "--baseline", str(pa), "--candidate", str(pb), "--n-boot", "200",
                 "--report", f"junit:{junit}"]) in (0, 1)
    assert junit.read_text().startswith("<?xml")
