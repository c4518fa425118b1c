"""The HTML report's data, without a browser: per-group rows, samples, trainer checkpoints, `evalsuite report`."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from evalsuite import stats
from evalsuite.errors import UsageError
from evalsuite.records import GenerateRequest, Output, Sample, SampleRecord, Score
from evalsuite.reports.cli import configure_report, run_report
from evalsuite.reports.compare import compare
from evalsuite.reports.html import metadata_rows, render_html, verdicts
from evalsuite.reports.html_groups import group_rows, item_rows, single_comparison
from evalsuite.reports.html_samples import readable, sample_rows, truncated, word_diff
from evalsuite.reports.html_training import training_section
from evalsuite.rundir import load_run
from tests.fixtures_runs import SynthTask, binary, write_run
from tests.report_views import comparison_runs, single_run, trainer_run


def report(*argv: str) -> int:
    p = argparse.ArgumentParser()
    configure_report(p)
    return run_report(p.parse_args(list(argv)))


def blob(page: str) -> list[dict]:
    return json.loads(page.split('id="samples-data">', 1)[1].split("</script>", 1)[0])


def test_word_diff_rebuilds_both_texts() -> None:
    """The diff's pieces give back the baseline ("=" and "-") and the run ("=" and "+") exactly."""
    a, b = "The plain answer is 4.\nDone", "The tuned answer is  4.\nDone now"
    pieces = word_diff(a, b)
    assert pieces is not None and ["-", "plain"] in pieces and ["+", "tuned"] in pieces
    assert "".join(t for op, t in pieces if op != "+") == a and "".join(t for op, t in pieces if op != "-") == b
    assert word_diff(a, a) is None


def test_truncation_and_readable_values() -> None:
    """Truncated: finish_reason "length", or tokens_out reaching the request's max_tokens; values read as text.
    Catches a check on the wrong field and Python reprs (`[False]`, `True`) leaking into the page."""
    sample = Sample("s", "q", "a")

    def rec(tokens: int, extra: dict | None = None) -> SampleRecord:
        return SampleRecord("t", sample, [GenerateRequest(prompt="q", max_tokens=8)],
                            [Output(texts=["x"], tokens_out=tokens, extra=extra or {})], Score({"acc": 1.0}))

    assert truncated(rec(8)) and truncated(rec(3, {"finish_reason": "length"}))
    assert not truncated(rec(7)) and not truncated(rec(7, {"finish_reason": "stop"}))
    assert readable({"strict": [False, True], "n": 0.5}) == "strict: no, yes; n: 0.5"
    assert readable(None) == "–" and readable("plain") == "plain"


def test_ifeval_groups_get_cis_and_paired_tests(tmp_path: Path) -> None:
    """IFEval's instruction-type groups (no sample metadata key gives them) get rows from the per-instruction
    verdicts in the answers: values equal to the stored ones, Wilson CIs, McNemar over shared instructions.
    Catches the groups missing from the report (as before) and rows built from the wrong run's verdicts."""
    paths, _ = comparison_runs(tmp_path)
    comp = compare([load_run(p) for p in paths], n_boot=200)
    rows = [r for r in group_rows(comp, n_boot=200) if r.task == "ifeval"]
    assert {r.group for r in rows} >= {"punctuation", "punctuation:no_comma", "change_case"}
    for row in rows:
        for run, est in zip(comp.runs, row.estimates):
            stored = run.tasks["ifeval"].groups[row.group][row.metric]
            assert est is not None and est.value == pytest.approx(stored.value) and est.method == "wilson"
        assert all(t is not None and t.method == "mcnemar-exact" for t in row.tests[1:])
    punct = next(r for r in rows if r.group == "punctuation:no_comma")
    assert punct.tests[1].delta == 0 and punct.tests[2].delta > 0  # sft = base on these instructions, dpo differs
    assert not [r for r in group_rows(comp) if r.task == "qa"], "qa's subjects come from compare itself"


def test_task_level_instruction_metrics_from_items(tmp_path: Path) -> None:
    """IFEval's inst_level_* have no per-sample values: compare falls back to a normal CI from the stored stderr
    (which can leave [0, 1]) and no test; the report rebuilds them from the per-instruction verdicts."""
    paths, _ = comparison_runs(tmp_path)
    comp = compare([load_run(p) for p in paths], n_boot=200)
    assert comp.find("ifeval", "inst_level_strict_acc").tests[1] is None  # what compare alone gives
    row = item_rows(comp)[("ifeval", "inst_level_strict_acc")]
    for run, est in zip(comp.runs, row.estimates):
        assert est.method == "wilson" and 0 <= est.lo <= est.value <= est.hi <= 1
        assert est.value == pytest.approx(run.tasks["ifeval"].metrics["inst_level_strict_acc"].value)
    assert row.tests[2].method == "mcnemar-exact" and row.tests[2].n == sum(1 + i % 3 for i in range(60))


def test_verdict_lists_significant_changes_and_noise(tmp_path: Path) -> None:
    """sft loses 20 and gains 4 of 150 on qa acc: a significant regression; dpo's 3 vs 12 an improvement."""
    paths, _ = comparison_runs(tmp_path)
    comp = compare([load_run(p) for p in paths], n_boot=200)
    sft, dpo = verdicts(comp, comp.rows)
    assert "qa acc" in [w["name"] for w in sft["worse"]] and not [b for b in sft["better"] if not b["group"]]
    assert "qa acc" in [b["name"] for b in dpo["better"]] and sft["noise"] > 0


def test_metadata_shows_only_differences_by_default(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", {"t": SynthTask({"acc": binary(20, 0.5, 1)})}, model="m-a")
    b = write_run(tmp_path / "b", {"t": SynthTask({"acc": binary(20, 0.5, 2)})}, model="m-b")
    rows = {r["field"]: r for r in metadata_rows([load_run(a), load_run(b)])}
    assert rows["model.name"]["shown"] and rows["model.name"]["differs"]
    assert not rows["versions.python"]["shown"] and rows["run directory"]["shown"]
    page = render_html(compare([load_run(a), load_run(b)], n_boot=100))
    assert '<details id="meta-details">' in page and 'class=" same"' in page


def test_single_run_report(tmp_path: Path) -> None:
    """`evalsuite report RUN`: scores with CIs per task and group, every sample with its flags, no deltas."""
    run = single_run(tmp_path)
    out = tmp_path / "one.html"
    assert report(str(run), "-o", str(out), "--n-boot", "200") == 0
    page = out.read_text(encoding="utf-8")
    assert "solo-model" in page and "1 failed" in page and "12 truncated at the token limit" in page
    assert page.count("Δ ") == page.count('id="f-change"') == 0, "one run: no deltas, no changed filter"
    assert re.search(r"<td>punctuation:no_comma</td><td>inst_level_strict_acc</td>\s*<td class=\"num\">[0-9.]+<br>"
                     r"<span class=\"ci\">\[[0-9.]+, [0-9.]+\]", page)
    items = [float(v) for r in load_run(run).records_for("ifeval") for v in r.score.answer["strict"]]
    wilson = stats.score_ci(items)  # the task-level instruction metric, from the per-instruction verdicts
    assert (f"<td>ifeval</td><td>inst_level_strict_acc</td>\n<td class=\"num\">{wilson.value:.4f}<br>"
            f"<span class=\"ci\">[{wilson.lo:.3f}, {wilson.hi:.3f}]</span>") in page
    samples = blob(page)
    assert len(samples) == 80 + 80 and sum(s["error"] for s in samples) == 1 and sum(s["truncated"] for s in samples) == 12
    comp = single_comparison(load_run(run), n_boot=100)
    assert [r.group for r in comp.rows if r.task == "qa"] == [None, "bio", "geo"]


def test_report_usage_errors(tmp_path: Path) -> None:
    run = single_run(tmp_path)
    with pytest.raises(UsageError, match="need two runs"):
        report(str(run), "--gate")
    with pytest.raises(UsageError, match="--tasks: nope not in"):
        report(str(run), "--tasks", "nope")
    with pytest.raises(UsageError, match="not an evalsuite run directory"):
        report(str(tmp_path / "missing"))


def test_trainer_checkpoints_have_cis_and_tests(tmp_path: Path) -> None:
    """Each scored checkpoint's score has a CI from its eval run's samples and a paired test against the first
    (step 0, drawn as the base line); the loss chart plots every logged step. Catches checkpoint scores shown
    without CIs (as before) and a chart that only has the window means."""
    train = trainer_run(tmp_path)
    section = training_section("train", load_run(train), n_boot=200)
    assert section is not None and section["first"] == 0 and section["columns"][-1] == "t/acc"
    cells = {row["step"]: row["cells"][-1] for row in section["table"]}
    assert all(re.fullmatch(r"\[0\.\d{3}, 0\.\d{3}\]", c["ci"]) for c in cells.values())
    assert cells[0]["p"] == "" and all(cells[s]["p"].startswith("p=") for s in (20, 40, 60))
    assert cells[40]["cls"] == "good" and next(r for r in section["table"] if r["best"])["step"] == 40
    loss, scores = section["charts"]
    assert "train loss (per step)" in loss and "train loss (window mean)" in loss
    assert "t/acc: base (step 0)" in scores and "scores per checkpoint (95% CI)" in scores
    assert len(re.findall(r"L \d", loss.split("train loss (per step)")[0])) >= 50, "one point per logged step"


def test_samples_pair_runs_and_flag_changes(tmp_path: Path) -> None:
    paths, _ = comparison_runs(tmp_path)
    runs = [load_run(p) for p in paths]
    rows = {(r["task"], r["id"]): r for r in sample_rows(runs, ["qa"])}
    base_acc = [r.score.values["acc"] for r in runs[0].records_for("qa")]
    sft_acc = [r.score.values["acc"] for r in runs[1].records_for("qa")]
    lost = [i for i, (a, b) in enumerate(zip(base_acc, sft_acc)) if a > b]
    assert {rows[("qa", f"qa-{i}")]["cells"][1]["change"] for i in lost} == {"lost"}
    row = rows[("qa", "qa-11")]
    assert row["error"] and row["cells"][2]["error"] == "backend timed out" and row["cells"][1]["error"] == ""
    assert ["-", "plain"] in row["cells"][1]["diff"] and row["cells"][0]["diff"] is None
