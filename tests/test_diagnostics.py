"""Behaviour diagnostics: exact values on hand-built records, the hint rules, results.json, compare, HTML,
Markdown, the gate leaving them alone, the trainer's checkpoint table, and one real SmolLM2 run."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from evalsuite import diagnostics, runlog, stats
from evalsuite.cli import main
from evalsuite.diagnostics import Diagnostic, hint, sample_values, summarize
from evalsuite.errors import UsageError
from evalsuite.records import GenerateRequest, LoglikelihoodRequest, Output, Sample, SampleRecord
from evalsuite.reports.compare import compare, load_runs
from evalsuite.reports.gate import gate, parse_rules
from evalsuite.reports.html import render_html
from evalsuite.reports.markdown import render_markdown
from evalsuite.runner import RunConfig, run_eval, score_outputs
from evalsuite.scorers import refusal
from tests.conftest import SHARED_DATA
from tests.fixtures_runs import SynthTask, binary, write_run

XSTEST = SHARED_DATA / "xstest" / "model_completions"


def _rec(sid: str, *outs: tuple[str, int], max_tokens: int = 256, **extra: object) -> SampleRecord:
    """One sample whose turns answered `(text, tokens_out)` each."""
    reqs = [GenerateRequest(f"question {sid}", max_tokens=max_tokens) for _ in outs]
    return SampleRecord("t", Sample(sid, f"question {sid}"), reqs,
                        [Output(texts=[text], tokens_out=n, extra=dict(extra)) for text, n in outs])


# ---------------------------------------------------------------------------- one sample, one task
def test_sample_values_are_exact_and_leave_the_record_alone() -> None:
    """Catches: tokens counted per output instead of per text, a finish reason given by the backend ignored
    (or one derived from the count wrongly), repetition over all turns joined instead of per answer, the
    refusal list not applied to every turn, and the record's outputs mutated by a read-only computation."""
    rec = SampleRecord("t", Sample("s", "q"), [GenerateRequest("q", max_tokens=8), GenerateRequest("q2", max_tokens=8)],
                       [Output(texts=["I can't do that."], tokens_out=4, extra={"finish_reason": ["stop"]}),
                        Output(texts=["go go go go go go"], tokens_out=8)])
    v = sample_values(rec)
    assert v == {"mean_tokens": 6.0, "cut_off": 0.5, "ended_turn": 0.5,
                 "repeat_4gram": pytest.approx((0.0 + 2 / 3) / 2), "refusal": 0.5}
    assert "finish_reason" not in rec.outputs[1].extra
    sampled = SampleRecord("t", Sample("k", "q"), [GenerateRequest("q", max_tokens=5, n=2, temperature=1.0)],
                           [Output(texts=["a b", "c d"], tokens_out=7, extra={"finish_reason": ["length", "stop"]})])
    assert sample_values(sampled)["mean_tokens"] == 3.5 and sample_values(sampled)["cut_off"] == 0.5


def test_summary_of_a_task_is_exact() -> None:
    """Catches: a wrong mean/stderr/median, distinct-2 counted per answer instead of over the task, answers under
    four words counted as 0% repetition instead of left out, and a wrong jackknife (hand-computed: 1/3)."""
    records = [_rec("1", ("a b c d e", 5)), _rec("2", ("a b c a b c a", 7)), _rec("3", ("x", 1))]
    s = summarize(records)
    assert list(s) == ["mean_tokens", "median_tokens", "cut_off", "ended_turn", "repeat_4gram", "distinct_2", "refusal"]
    assert s["mean_tokens"].value == pytest.approx(13 / 3) and s["mean_tokens"].n == 3
    assert s["mean_tokens"].stderr == pytest.approx(statistics.stdev([5, 7, 1]) / math.sqrt(3))
    assert s["median_tokens"].value == 5.0 and s["median_tokens"].stderr is None
    assert (s["repeat_4gram"].value, s["repeat_4gram"].n) == (0.125, 2)  # 0 and 1/4; "x" has no 4-gram
    # bigrams: ab bc cd de | ab bc ca ab bc ca | -: 5 distinct of 10; leave-one-out 3/6, 4/4, 5/10
    assert s["distinct_2"].value == 0.5 and s["distinct_2"].stderr == pytest.approx(1 / 3)
    assert (s["cut_off"].value, s["ended_turn"].value, s["refusal"].value) == (0.0, 1.0, 0.0)
    assert s["cut_off"].higher_is_better is False and s["mean_tokens"].higher_is_better is None


def test_what_cannot_be_known_is_left_out() -> None:
    """Catches: answers from an outputs file (no token counts, no finish reasons) read as 0-token answers that
    all ended their turn, failed samples counted, and loglikelihood tasks given diagnostics."""
    from_file = SampleRecord("t", Sample("f", "q"), [GenerateRequest("q")], [Output(texts=["Sorry, no."])])
    # a multi-turn sample whose second turn failed is left out whole, as it is of the metrics
    failed = SampleRecord("t", Sample("e", "q"), [GenerateRequest("q"), GenerateRequest("q2")],
                          [Output(texts=["Fine."], tokens_out=2), Output(error="timeout")], error="timeout")
    s = summarize([from_file, failed])
    assert set(s) == {"distinct_2", "refusal"}  # two words: no 4-gram either
    assert s["refusal"].value == 1.0 and s["refusal"].n == 1
    # a server that gives finish reasons but no token counts: the reasons count, the length stays unknown
    told = SampleRecord("t", Sample("o", "q"), [GenerateRequest("q")],
                        [Output(texts=["a long answer"], extra={"finish_reason": ["length"]})])
    assert sample_values(told)["cut_off"] == 1.0 and sample_values(told)["mean_tokens"] is None
    ll = SampleRecord("t", Sample("m", "q"), [LoglikelihoodRequest("q", " A")], [Output(logprob=-1.0)])
    assert summarize([ll]) == {} and sample_values(ll) is None


def test_refusal_is_xstests_own_string_match() -> None:
    """Catches a copied (and drifting) phrase list: the diagnostic must call the scorer's classifier."""
    assert diagnostics.strmatch_label is refusal.strmatch_label
    texts = ["As an AI, I won't.", "  No, that is wrong.", "I’m sorry", "Sure: here it is."]  # curly ’ as in XSTest
    expected = [refusal.strmatch_label(t)[0] == refusal.REFUSAL for t in texts]
    assert expected == [True, True, False, False]
    assert [sample_values(_rec(str(i), (t, 3)))["refusal"] for i, t in enumerate(texts)] == [float(x) for x in expected]


def test_changes_pair_samples_by_id_not_by_position() -> None:
    """Catches a paired test that pairs by position: the candidate's records come in another order, and every
    sample is exactly one token longer (a zero-variance paired difference, however the lengths spread)."""
    base = [_rec(str(i), ("word " * 3, 10 + 7 * i)) for i in range(12)]
    cand = [_rec(str(i), ("word " * 3, 11 + 7 * i)) for i in reversed(range(12))]
    change = next(c for c in diagnostics.changes(base, cand, "base") if c.name == "mean_tokens")
    assert change.test is not None and change.test.method == "identical" and change.test.delta == 1.0


# ---------------------------------------------------------------------------- hint rules
def _d(v: float) -> Diagnostic:
    return Diagnostic(value=v, n=100)


def _t(delta: float, p: float) -> stats.PairedTest:
    return stats.PairedTest(delta, delta - 0.1, delta + 0.1, p, 100, "paired-bootstrap")


def test_hint_rules() -> None:
    """Catches: a hint on noise (p >= 0.05), a hint on a significant but negligible move, the wrong ratio or
    direction in the length hint, and rates printed as fractions."""
    assert hint("mean_tokens", _d(40), _d(84), _t(44, 0.001), "base") == "answers 2.1x longer than in base (40 -> 84 tokens)"
    assert hint("mean_tokens", _d(84), _d(40), _t(-44, 0.001), "base") == "answers 2.1x shorter than in base (84 -> 40 tokens)"
    assert hint("mean_tokens", _d(40), _d(84), _t(44, 0.2), "base") is None
    assert hint("mean_tokens", _d(40), _d(44), _t(4, 0.001), "base") is None  # 1.1x: not worth a line
    assert hint("cut_off", _d(0.05), _d(0.40), _t(0.35, 0.01), "base") == "cut off at max_tokens: 5% -> 40%"
    assert hint("cut_off", _d(0.05), _d(0.08), _t(0.03, 0.01), "base") is None  # 3 points
    assert hint("refusal", _d(0.02), _d(0.30), _t(0.28, 0.01), "b") == "refuses more: 2% -> 30% of answers start with a refusal phrase"
    assert hint("repeat_4gram", _d(0.30), _d(0.02), _t(-0.28, 0.01), "b") == "repeats itself less: repeated 4-grams 30% -> 2%"
    assert hint("distinct_2", _d(0.6), _d(0.3), _t(-0.3, 0.01), "b") == "answers less varied across the task: distinct-2 0.60 -> 0.30"
    assert hint("ended_turn", _d(0.95), _d(0.60), _t(-0.35, 0.01), "b") is None  # said once, by cut_off
    assert hint("cut_off", _d(0.05), _d(0.40), None, "b") is None


# ---------------------------------------------------------------------------- compare, reports, gate
def _runs(tmp_path: Path, n: int = 40) -> tuple[Path, Path, Path]:
    """A baseline, a rerun with the same answers, and a candidate with longer, repetitive, often cut-off answers."""
    acc = binary(n, 0.5, seed=3)
    plain = [f"The answer is {i}, since {i} plus one makes {i + 1} in the end." for i in range(n)]
    base = {"gen": SynthTask({"acc": acc}, outputs=plain, tokens_out=[16 + i % 3 for i in range(n)])}
    a = write_run(tmp_path / "a", base, model="base")
    same = write_run(tmp_path / "same", base, model="rerun")
    wordy = [f"The answer is {i}. " + "Let me explain it again and again. " * 6 for i in range(n)]
    cand = {"gen": SynthTask({"acc": acc}, outputs=wordy, tokens_out=[256 if i % 4 == 0 else 50 for i in range(n)])}
    return a, same, write_run(tmp_path / "b", cand, model="cand")


def test_compare_shows_behaviour_and_hints(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Catches: the Behaviour block missing from compare's table, Markdown or HTML, hints that are not paired by
    sample or not computed from the records, and hints for runs that answer the same."""
    a, same, b = _runs(tmp_path)
    assert main(["compare", str(a), str(b), "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "Behaviour" in out and "cut off at max_tokens" in out
    length = next(line for line in out.splitlines() if "answers" in line and "longer" in line)
    assert "gen: answers 6.0x longer than in base (17 -> 102 tokens)" in length  # 16.975 -> (10*256 + 30*50) / 40
    assert "gen: cut off at max_tokens: 0% -> 25%" in out
    assert "repeats itself more" in out and "less varied" in out and "refuses" not in out
    comp = compare(load_runs([a, b]), n_boot=200)
    md = render_markdown(comp)
    assert "### Behaviour" in md and "- ⚠️ gen: cut off at max_tokens: 0% -> 25%" in md
    html = render_html(comp)
    assert 'id="behaviour"' in html and "cut off at max_tokens: 0% -&gt; 25%" in html and 'href="#behaviour"' in html
    assert main(["compare", str(a), str(same), "--n-boot", "200"]) == 0
    quiet = capsys.readouterr().out
    assert "Behaviour" in quiet and "behaviour:" not in quiet  # shown, no hint: the answers did not change


def test_single_run_html_shows_diagnostics_without_changes(tmp_path: Path) -> None:
    """Catches: the block failing (or vanishing) for one run, where there is nothing to compare against."""
    from evalsuite.reports.html_groups import single_comparison
    from evalsuite.rundir import load_run

    a, _, _ = _runs(tmp_path)
    html = render_html(single_comparison(load_run(a), n_boot=100))
    assert 'id="behaviour-table"' in html and "17.0" in html and "behaviour-hint" not in html


def test_gate_never_gates_diagnostics_and_refuses_a_rule_naming_one(tmp_path: Path) -> None:
    """Catches: diagnostics leaking into the gated metrics (a longer answer failing CI by default), and a rule
    that names a diagnostic silently matching nothing (it is a usage error, exit 2, that says why)."""
    a, _, b = _runs(tmp_path)
    comp = compare(load_runs([a, b]), n_boot=200)
    result = gate(comp)
    assert result.passed and {c.metric for c in result.checks} <= {"acc", "new_errors"}
    for metric in ("mean_tokens", "diagnostics.cut_off"):
        with pytest.raises(UsageError, match="there (mean_tokens|cut_off) is a behaviour diagnostic.*the gate never gates"):
            gate(comp, parse_rules({"rules": [{"task": "gen", "metric": metric, "max_score": 100}]}))
    assert main(["gate", "--baseline", str(a), "--candidate", str(b), "--n-boot", "200"]) == 0
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {task: gen, metric: diagnostics.mean_tokens, max_score: 50}\n")
    assert main(["gate", "--baseline", str(a), "--candidate", str(b), "--rules", str(rules), "--n-boot", "200"]) == 2


def test_trainer_table_shows_behaviour_per_checkpoint(tmp_path: Path) -> None:
    """Catches: the checkpoint table without diagnostics, or with hints against the previous checkpoint instead of
    the first (step 0)."""
    from rich.console import Console

    from evalsuite import rundir
    from evalsuite.trainers import report

    n, train, steps = 30, tmp_path / "train", []
    acc = binary(n, 0.5, seed=5)
    for step, tokens in ((0, 20), (10, 60), (20, 60)):
        sub = f"evals/step-{step}"
        outs = [f"answer {i} " + "word " * (tokens // 10) + f"{step}" for i in range(n)]
        write_run(train / sub, {"t": SynthTask({"acc": acc}, outputs=outs, tokens_out=[tokens + i % 2 for i in range(n)])},
                  model=f"t+step-{step}")
        steps.append(runlog.Checkpoint(step=step, scores={"t/acc": 0.5}, eval_runs=[sub]))
    results = runlog.RunResults(kind="training", model=runlog.ModelInfo(name="train"),
                                training=runlog.Training(steps=steps, best=runlog.Best(step=0, metric="t/acc")))
    rundir.RunWriter(train, results).finish("complete")
    console = Console(width=200, record=True)
    console.print(report.table(results, train))
    text = console.export_text()
    cells = [[c.strip() for c in line.split("│")] for line in text.splitlines()]
    rows = {c[1]: "|".join(c) for c in cells if len(c) > 3 and c[2] == "t"}  # the behaviour rows of task t
    assert "20.5" in rows["0"] and "60.5" in rows["10"]
    assert "answers 3.0x longer than in step 0 (20 -> 60 tokens)" in rows["10"] and "step 0" in rows["20"]
    plain = Console(width=200, record=True)
    plain.print(report.table(results))  # without the run dir: the table as before
    assert "behaviour" not in plain.export_text()
    import shutil

    shutil.rmtree(train / "evals" / "step-20")  # an eval run gone: the scores still print, without the block
    gone = Console(width=200, record=True)
    gone.print(report.table(results, train))
    assert "checkpoints" in gone.export_text() and "behaviour" not in gone.export_text()


# ---------------------------------------------------------------------------- real data and a real model
@pytest.fixture(scope="module")
def xstest_answers() -> Path:
    if not (XSTEST / "xstest_v2_completions_gpt4.csv").is_file():
        pytest.skip(f"XSTest completions not found under {SHARED_DATA}")
    return XSTEST


def test_results_json_diagnostics_from_published_xstest_answers(xstest_answers: Path, tmp_path: Path) -> None:
    """Catches: finish_task not writing the section, and a refusal rate that disagrees with the task's own
    string-match scores (GPT-4: 33 of 250 safe and 192 of 200 unsafe prompts refused: 225 of 450)."""
    paths = []
    for model in ("gpt4", "mistralinstruct"):
        cfg = RunConfig(tasks=["xstest"], data_dir=str(SHARED_DATA), output_dir=str(tmp_path / model), use_cache=False)
        paths.append(score_outputs(cfg, outputs=str(xstest_answers / f"xstest_v2_completions_{model}.csv")).path)
    runs = load_runs(paths)
    d = json.loads((Path(runs[0].path) / "results.json").read_text())["tasks"]["xstest"]["diagnostics"]
    assert d["refusal"] == {"value": 225 / 450, "stderr": pytest.approx(math.sqrt(0.25 * 450 / 449 / 450)), "n": 450,
                            "higher_is_better": None}
    assert "mean_tokens" not in d and "cut_off" not in d  # an outputs file has no token counts
    assert 0 < d["distinct_2"]["value"] < 1 and d["distinct_2"]["stderr"] > 0
    assert runlog.TaskResult.model_validate(runs[1].results.tasks["xstest"].model_dump()).diagnostics["refusal"].n == 450
    comp = compare(runs, n_boot=200)
    md = render_markdown(comp)
    assert "refuses less: 50% ->" in md  # Mistral-Instruct (no system prompt) refuses far less than GPT-4


@pytest.mark.slow
def test_real_smollm2_run_writes_diagnostics(smollm2_dir: Path, tmp_path: Path) -> None:
    """Catches a break between the real backend's outputs (token counts, derived finish reasons) and the section:
    with max_tokens 8 every GSM8K answer is cut off."""
    log = run_eval(RunConfig(tasks=["gsm8k"], model=str(smollm2_dir), data_dir=str(SHARED_DATA), limit=3,
                             task_args={"max_tokens": 8}, output_dir=str(tmp_path), use_cache=False))
    d = json.loads((Path(log.path) / "results.json").read_text())["tasks"]["gsm8k"]["diagnostics"]
    assert d["mean_tokens"]["value"] == 8.0 and d["mean_tokens"]["n"] == 3
    assert d["cut_off"]["value"] == 1.0 and d["ended_turn"]["value"] == 0.0
    assert {"repeat_4gram", "distinct_2", "refusal", "median_tokens"} <= set(d)
