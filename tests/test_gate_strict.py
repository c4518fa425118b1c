"""The gate never passes by omission: absent metrics and tasks, missing outputs, misspelled rule
targets and a broken judge fail it; and it says how small a drop its paired tests can detect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalsuite.cli import main
from evalsuite.errors import UsageError
from evalsuite.reports.compare import compare, load_runs
from evalsuite.reports.gate import FAIL, PASS, SKIP, detectable_drop, gate, min_flips, parse_rules
from evalsuite.runner import RunConfig, score_outputs
from tests.fixtures_runs import SynthTask, binary, flip, write_run
from tests.judge_server import JudgeServer, judge_server  # noqa: F401 - fixture

BASE = binary(200, 0.6, seed=7)


def _gate(a: Path, b: Path, rules: dict | None = None, allow_mismatch: bool = False, **kw):
    comp = compare(load_runs([a, b]), n_boot=300, allow_mismatch=allow_mismatch)
    return gate(comp, parse_rules(rules), **kw)


def _check(result, metric: str, task: str | None = None):
    return next(c for c in result.checks if c.metric == metric and c.group is None and task in (None, c.task))


# ---------------------------------------------------------------------------- absent metrics and tasks
def test_metric_absent_from_the_candidate_fails_unless_optional(tmp_path: Path) -> None:
    """It used to be "skipped" and the gate passed (exit 0) although the metric was never checked."""
    a = write_run(tmp_path / "a", {"qa": SynthTask({"acc": BASE, "f1": BASE})}, model="a")
    b = write_run(tmp_path / "b", {"qa": SynthTask({"acc": BASE})}, model="b")
    result = _gate(a, b)
    f1 = _check(result, "f1")
    assert result.exit_code == 1 and f1.status == FAIL and "no score in the candidate" in f1.message
    assert main(["gate", "--baseline", str(a), "--candidate", str(b), "--n-boot", "200"]) == 1
    optional = _gate(a, b, {"rules": [{"task": "qa", "metric": "f1", "optional": True}]})
    assert optional.exit_code == 0 and _check(optional, "f1").status == SKIP


def test_task_absent_from_the_candidate_fails_unless_optional(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write_run(tmp_path / "a", {"qa": SynthTask({"acc": BASE}), "arc_easy": SynthTask({"acc": BASE})}, model="a")
    b = write_run(tmp_path / "b", {"qa": SynthTask({"acc": BASE})}, model="b")
    result = _gate(a, b, allow_mismatch=True)
    check = _check(result, "task", "arc_easy")
    assert result.exit_code == 1 and check.status == FAIL and "not in the candidate" in check.message
    assert _gate(a, b, {"rules": [{"task": "arc_easy", "optional": True}]}, allow_mismatch=True).exit_code == 0
    assert _gate(a, b, allow_mismatch=True, tasks=["qa"]).exit_code == 0  # `--tasks qa`: arc_easy was not asked for
    c = write_run(tmp_path / "c", {"qa": SynthTask({"acc": BASE}), "mbpp": SynthTask({"acc": BASE})}, model="c")
    three = write_run(tmp_path / "3", {"qa": SynthTask({"acc": BASE}), "mbpp": SynthTask({"acc": BASE}),
                                       "arc_easy": SynthTask({"acc": BASE})}, model="3")
    restricted = compare(load_runs([three, c]), tasks=["qa"], n_boot=300)  # told from the comparison itself
    assert gate(restricted).exit_code == 0 and not [ch for ch in gate(restricted).checks if ch.metric == "task"]
    assert main(["gate", "--baseline", str(a), "--candidate", str(b), "--allow-mismatch"]) == 1
    assert "FAIL arc_easy task: in the baseline but not in the candidate" in capsys.readouterr().out
    assert main(["gate", "--baseline", str(a), "--candidate", str(b)]) == 2  # without it: not comparable


def test_missing_outputs_fail_the_gate(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Real GSM8K scored from outputs files; the candidate's file lacks 3 answers (scored with allow_missing)."""
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:30]]
    outputs = [{"id": str(i), "output": r["answer"]} for i, r in enumerate(rows)]  # the gold solution: "#### N"
    dirs = {}
    for name, lines in (("base", outputs), ("cand", outputs[:27])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        cfg = RunConfig(tasks=["gsm8k"], data_dir=str(shared_data), limit=30, output_dir=str(tmp_path / name),
                        allow_missing=True)
        dirs[name] = score_outputs(cfg, outputs=str(tmp_path / f"{name}.jsonl")).path
    capsys.readouterr()
    assert main(["gate", "--baseline", str(dirs["base"]), "--candidate", str(dirs["cand"]), "--allow-mismatch"]) == 1
    out = capsys.readouterr().out
    assert "FAIL gsm8k missing_outputs: 3 sample(s) have no output in the candidate (27, 28, 29) (allowed: 0)" in out
    rules = tmp_path / "gate.yaml"
    rules.write_text("rules:\n  - {task: gsm8k, max_missing: 3}\n")
    assert main(["gate", "--baseline", str(dirs["base"]), "--candidate", str(dirs["cand"]), "--allow-mismatch",
                 "--rules", str(rules)]) == 0
    assert "evalsuite gate: PASS" in capsys.readouterr().out


# ---------------------------------------------------------------------------- rules that match nothing
def test_rule_for_a_misspelled_task_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`task: arc_eazy` used to warn and pass: the min_score the user asked for was never applied."""
    a = write_run(tmp_path / "a", {"arc_easy": SynthTask({"acc": BASE})}, model="a")
    b = write_run(tmp_path / "b", {"arc_easy": SynthTask({"acc": BASE})}, model="b")
    rules = tmp_path / "gate.yaml"
    rules.write_text("rules:\n  - {task: arc_eazy, min_score: 0.99}\n")
    assert main(["gate", "--baseline", str(a), "--candidate", str(b), "--rules", str(rules)]) == 2
    err = capsys.readouterr().err
    assert "rules[0] (task 'arc_eazy'" in err and "they have: arc_easy" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UsageError, match="matches no task"):  # optional does not excuse a literal name
        _gate(a, b, {"rules": [{"task": "arc_eazy", "min_score": 0.99, "optional": True}]})
    with pytest.raises(UsageError, match="mark the rule `optional: true`"):
        _gate(a, b, {"rules": [{"task": "mmlu*", "alpha": 0.01}]})
    shared = _gate(a, b, {"rules": [{"task": "mmlu*", "alpha": 0.01, "optional": True}]})
    assert shared.exit_code == 0 and any("'mmlu*'" in w for w in shared.warnings)
    with pytest.raises(UsageError, match="optional is set per rule"):
        parse_rules({"defaults": {"optional": True}})


# ---------------------------------------------------------------------------- a broken judge
def test_broken_judge_rate_and_threshold(tmp_path: Path) -> None:
    lower = {"judge_error": False}
    win = binary(100, 0.5, seed=3)
    errs = [1.0 if i % 20 < 7 else 0.0 for i in range(100)]  # 35%
    a = write_run(tmp_path / "a", {"winrate": SynthTask({"win": win, "judge_error": [0.0] * 100},
                                                        higher_is_better=lower)})
    b = write_run(tmp_path / "b", {"winrate": SynthTask({"win": win, "judge_error": errs}, higher_is_better=lower)},
                  model="b")
    check = _check(_gate(a, b), "judge_errors")
    assert check.status == FAIL and check.message.startswith("the judge failed on 35.0% of the candidate samples")
    assert _check(_gate(a, b, {"rules": [{"task": "winrate", "max_judge_errors": 0.5}]}), "judge_errors").status == PASS
    off = _gate(a, b, {"rules": [{"task": "winrate", "max_judge_errors": None}]})
    assert not [c for c in off.checks if c.metric == "judge_errors"]
    broken_base = _check(_gate(b, a), "judge_errors")  # a broken baseline makes the comparison meaningless too
    assert broken_base.status == FAIL and "35.0% of the baseline samples" in broken_base.message


def test_broken_judge_fails_the_gate_end_to_end(judge_server: JudgeServer, shared_data: Path,  # noqa: F811
                                                tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Real self-instruct prompts, win rates judged by a real judge server on 127.0.0.1 that stops giving verdicts."""
    from evalsuite.task import TaskContext
    from evalsuite.tasks.winrate import WinRate

    ids = [s.id for s in WinRate().load(TaskContext(data_dir=shared_data))[:4]]

    def score(name: str, text: str, **task_args: str) -> Path:
        outputs = tmp_path / f"{name}.jsonl"
        outputs.write_text("".join(json.dumps({"id": i, "output": text}) + "\n" for i in ids))
        cfg = RunConfig(tasks=["winrate"], task_args=task_args, data_dir=str(shared_data), limit=4,
                        output_dir=str(tmp_path / name), cache_path=str(tmp_path / f"{name}.sqlite"),
                        judge="openai:judge", judge_args=judge_server.judge_args(),
                        max_judge_errors=1.0)  # keep the broken run (scoring alone would already exit 1)
        return score_outputs(cfg, outputs=str(outputs)).path

    reference = score("reference", "ok")  # outputs only: what both models are judged against
    base = score("base", "a longer, careful answer", baseline=str(reference))
    judge_server.policy = "garbage"  # replies without a [[A]]/[[B]] verdict
    cand = score("cand", "another longer answer", baseline=str(reference))
    capsys.readouterr()
    assert main(["gate", "--baseline", str(base), "--candidate", str(cand), "--n-boot", "200"]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("FAIL winrate judge_errors:")]
    assert len(lines) == 1 and "the judge failed on 100.0% of the candidate samples" in lines[0], out


# ---------------------------------------------------------------------------- detectable drop
def test_detectable_drop_of_the_paired_tests(tmp_path: Path) -> None:
    """One line per task; McNemar's exact floor (6 one-way flips at alpha 0.05) and the normal approximation."""
    from scipy.stats import binomtest
    from statsmodels.stats.power import NormalIndPower

    assert min_flips(0.05) == 6 and binomtest(0, 6, 0.5).pvalue < 0.05 <= binomtest(0, 5, 0.5).pvalue
    assert min_flips(0.01) == 8 and binomtest(0, 8, 0.5).pvalue < 0.01 <= binomtest(0, 7, 0.5).pvalue
    small = binary(20, 0.6, seed=1)
    a = write_run(tmp_path / "a", {"qa": SynthTask({"acc": small})}, model="a")
    b = write_run(tmp_path / "b", {"qa": SynthTask({"acc": flip(small, 2, 1, seed=1)})}, model="b")
    assert _gate(a, b).notes == ["qa: with n=20 a drop under 30.0 pts in acc cannot be told from noise "
                                 "(alpha=0.05, 80% power)"]
    big = binary(400, 0.6, seed=11)
    c = write_run(tmp_path / "c", {"qa": SynthTask({"acc": big, "f1": big})}, model="c")
    d = write_run(tmp_path / "d", {"qa": SynthTask({"acc": flip(big, 30, 6, seed=1), "f1": big})}, model="d")
    result = _gate(c, d)
    row = result.comparison.find("qa", "acc")
    test = row.tests[1]
    sd = ((36 - 24**2 / 400) / 400) ** 0.5  # per-sample SD of the paired difference: 30 down, 6 up
    effect = NormalIndPower().solve_power(nobs1=400, alpha=0.05, power=0.8, ratio=0)  # in SDs, one-sample
    assert detectable_drop(test, 0.05) == pytest.approx(effect * sd, rel=0.01)
    assert result.notes == [f"qa: with n=400 a drop under {effect * sd * 100:.1f} pts in acc, 1.5 pts in f1 cannot "
                            "be told from noise (alpha=0.05, 80% power)"]  # f1 identical: the 6/400 floor
    scores = [1.0 + 9 * v for v in binary(200, 0.6, seed=5)]
    e = write_run(tmp_path / "e", {"mt": SynthTask({"score": scores})}, model="e")
    lower_half = [s - 0.5 * (i % 2) for i, s in enumerate(scores)]
    f = write_run(tmp_path / "f", {"mt": SynthTask({"score": lower_half})}, model="f")
    (line,) = _gate(e, f).notes
    assert line.startswith("mt: with n=200 a drop under ") and " in score " in line and "pts" not in line


def test_cli_prints_the_detectable_drop(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`evalsuite gate` shows each task's detectable drop on one line, so a tiny eval is not read as a safe one."""
    small = binary(20, 0.6, seed=1)
    a = write_run(tmp_path / "a", {"qa": SynthTask({"acc": small})}, model="a")
    b = write_run(tmp_path / "b", {"qa": SynthTask({"acc": flip(small, 2, 1, seed=1)})}, model="b")
    assert main(["gate", "--baseline", str(a), "--candidate", str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "qa: with n=20 a drop under 30.0 pts in acc cannot be told from noise (alpha=0.05, 80% power)" in out


def test_cli_tasks_flag_limits_what_the_candidate_must_have(tmp_path: Path) -> None:
    """`gate --tasks qa` (e.g. with `--run`): the baseline's other tasks are not required of the candidate."""
    a = write_run(tmp_path / "a", {"qa": SynthTask({"acc": BASE}), "arc_easy": SynthTask({"acc": BASE})}, model="a")
    b = write_run(tmp_path / "b", {"qa": SynthTask({"acc": BASE})}, model="b")
    assert main(["gate", "--baseline", str(a), "--candidate", str(b), "--tasks", "qa"]) == 0
    assert main(["gate", "--baseline", str(a), "--candidate", str(b), "--allow-mismatch"]) == 1
