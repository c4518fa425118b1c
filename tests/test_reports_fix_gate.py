"""Gate fixes: recorded metric directions, diagnostics, scale-aware default drop, rules that match
nothing, exit 2 (never 1) for bad input, and `gate --run` reusing the baseline's judge and data dir."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from evalsuite.cli import main
from evalsuite.errors import UsageError
from evalsuite.reports.compare import compare, load_runs
from evalsuite.reports.gate import FAIL, PASS, gate, load_rules, parse_rules
from tests.fixtures_runs import SynthTask, binary, flip, write_run

EXAMPLE_RULES = Path(__file__).resolve().parents[1] / "examples" / "gate.yaml"


def _gate(a: Path, b: Path, rules: dict | None = None):
    return gate(compare(load_runs([a, b]), n_boot=300), parse_rules(rules))


def _checks(result) -> dict[str, object]:
    return {c.metric: c for c in result.checks if c.group is None}


def test_gate_uses_the_recorded_direction_not_the_name(tmp_path: Path) -> None:
    """An "acc" declared lower-is-better regresses when it rises; an undeclared "eval_loss" is higher-is-better
    (a name is no evidence); a rule's higher_is_better overrides the record."""
    low = binary(300, 0.3, seed=4)
    high = flip(low, down=0, up=40, seed=4)  # +13 points
    a = write_run(tmp_path / "a", {"t": SynthTask({"acc": low, "eval_loss": high}, higher_is_better={"acc": False})})
    b = write_run(tmp_path / "b", {"t": SynthTask({"acc": high, "eval_loss": low}, higher_is_better={"acc": False})},
                  model="b")
    checks = _checks(_gate(a, b))
    assert checks["acc"].status == FAIL and "rose by 0.1333" in checks["acc"].message
    assert checks["eval_loss"].status == FAIL and "dropped by 0.1333" in checks["eval_loss"].message
    flipped = _checks(_gate(a, b, {"rules": [{"task": "t", "metric": "*", "higher_is_better": True}]}))
    assert flipped["acc"].status == PASS and flipped["eval_loss"].status == FAIL


def test_judge_metrics_gated_the_right_way(tmp_path: Path) -> None:
    """A winrate run whose judge errors rose is a regression; length diagnostics are not gated by default."""
    win = binary(300, 0.5, seed=3)
    errs_a = [0.0] * 300
    errs_b = [1.0 if i % 5 == 0 else 0.0 for i in range(300)]  # 20% judge errors in the candidate
    lc = {"metrics": {"lc_length_coef": {"value": 0.01, "stderr": None, "n": 300}}}
    lc_b = {"metrics": {"lc_length_coef": {"value": 0.5, "stderr": None, "n": 300}}}
    lower = {"judge_error": False}  # as WinRate declares it
    scores_a = {"win": win, "judge_error": errs_a, "length_diff": [0.0] * 300}
    scores_b = {"win": win, "judge_error": errs_b, "length_diff": [-500.0] * 300}
    a = write_run(tmp_path / "a", {"winrate": SynthTask(scores_a, extra=lc, higher_is_better=lower)}, model="a")
    b = write_run(tmp_path / "b", {"winrate": SynthTask(scores_b, extra=lc_b, higher_is_better=lower)}, model="b")
    checks = _checks(_gate(a, b))
    assert checks["judge_error"].status == FAIL and "rose by 0.2000" in checks["judge_error"].message
    assert "length_diff" not in checks and "lc_length_coef" not in checks
    named = _checks(_gate(a, b, {"rules": [{"task": "winrate", "metric": "length_diff", "min_score": -100}]}))
    assert named["length_diff"].status == FAIL and "below the minimum -100" in named["length_diff"].message


def test_default_drop_scales_with_the_metric(tmp_path: Path) -> None:
    """MT-Bench's 1-10 score: a significant 0.05 drop is under 1% of 7 (allowed); 0.3 is a regression."""
    base = [1.0 + 9 * v for v in binary(200, 0.67, seed=5)]
    small = [v - 0.05 for v in base]
    big = [v - 0.3 for v in base]
    a = write_run(tmp_path / "a", {"mt_bench": SynthTask({"score": base})}, model="a")
    b = write_run(tmp_path / "b", {"mt_bench": SynthTask({"score": small})}, model="b")
    c = write_run(tmp_path / "c", {"mt_bench": SynthTask({"score": big})}, model="c")
    ok = _checks(_gate(a, b))["score"]
    assert ok.status == PASS and ok.pvalue < 0.05
    bad = _checks(_gate(a, c))["score"]
    assert 6 < bad.baseline < 8 and bad.status == FAIL
    assert f"dropped by 0.3000, over the allowed {0.01 * bad.baseline:.4f}" in bad.message
    assert "pts" not in bad.message  # "points" only for [0, 1] metrics
    # accuracies keep the 1-point default, and an explicit number is absolute
    acc = binary(400, 0.6, seed=11)
    x = write_run(tmp_path / "x", {"qa": SynthTask({"acc": acc})}, model="x")
    y = write_run(tmp_path / "y", {"qa": SynthTask({"acc": flip(acc, 30, 6, seed=1)})}, model="y")
    assert "over the allowed 0.0100" in _checks(_gate(x, y))["acc"].message
    assert _checks(_gate(a, c, {"defaults": {"max_drop": 0.5}}))["score"].status == PASS


def test_bad_threshold_types_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="max_drop must be a number >= 0, 'auto' or null in defaults"):
        parse_rules({"defaults": {"max_drop": "1 point"}})
    with pytest.raises(UsageError, match=r"min_score must be a number or null in rules\[0\]"):
        parse_rules({"rules": [{"task": "qa", "min_score": "high"}]})
    with pytest.raises(UsageError, match="require_significance must be true or false"):
        parse_rules({"defaults": {"require_significance": "yes"}})


def _gsm8k_runs(tmp: Path) -> tuple[Path, Path]:
    base = binary(200, 0.5, seed=2)
    scores = {"exact_match_strict": base, "exact_match_flexible": base}
    a = write_run(tmp / "a", {"gsm8k": SynthTask(scores)}, model="a")
    b = write_run(tmp / "b", {"gsm8k": SynthTask(scores)}, model="b")
    return a, b


def test_example_rules_apply_to_gsm8k_metrics(tmp_path: Path) -> None:
    """examples/gate.yaml's gsm8k rule names a metric GSM8K really emits: its min_score is applied."""
    a, b = _gsm8k_runs(tmp_path)
    result = gate(compare(load_runs([a, b]), n_boot=300), load_rules(EXAMPLE_RULES, {"alpha": 0.05}))
    strict = _checks(result)["exact_match_strict"]
    assert strict.status == PASS
    rules = load_rules(EXAMPLE_RULES)
    row = result.comparison.find("gsm8k", "exact_match_strict")
    assert rules.for_row(row).min_score == 0.25  # the gsm8k rule, not the defaults
    assert any("rules[1] (task 'mmlu*'" in w and "matches no task of these runs; they have: gsm8k (optional)" in w
               for w in result.warnings)


def test_rule_with_a_misspelled_metric_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = _gsm8k_runs(tmp_path)
    with pytest.raises(UsageError, match=r"rules\[0\] \(task 'gsm8k', metric 'exact_match'\) matches no metric"):
        _gate(a, b, {"rules": [{"task": "gsm8k", "metric": "exact_match", "min_score": 0.9}]})
    rules = tmp_path / "gate.yaml"
    rules.write_text("rules:\n  - {task: gsm8k, metric: exact_match, min_score: 0.9}\n")
    assert main(["gate", "--baseline", str(a), "--candidate", str(b), "--rules", str(rules)]) == 2
    err = capsys.readouterr().err
    assert "exact_match_flexible, exact_match_strict" in err and len(err.strip().splitlines()) == 1
    # a pattern that matches nothing is an error too, unless it is marked optional: then it warns
    pattern = {"task": "gsm8k", "metric": "*loss*", "max_drop_relative": 0.05}
    with pytest.raises(UsageError, match=r"matches no metric of task\(s\) gsm8k.*mark the rule `optional: true`"):
        _gate(a, b, {"rules": [pattern]})
    result = _gate(a, b, {"rules": [{**pattern, "optional": True}]})
    assert result.exit_code == 0 and any("'*loss*'" in w for w in result.warnings)


def test_corrupt_samples_file_is_exit_2_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = _gsm8k_runs(tmp_path)
    samples = b / "samples.jsonl"
    lines = samples.read_text().splitlines(keepends=True)
    samples.write_text("".join(lines[:2]) + '{"task": "gsm8k", "id": \n' + "".join(lines[2:]))
    assert main(["gate", "--baseline", str(a), "--candidate", str(b)]) == 2
    err = capsys.readouterr().err
    assert f"{samples}:3: not a valid sample record" in err and "Traceback" not in err
    samples.write_text("".join(lines[:4]) + '{"task": "gsm8k"}\n')  # valid JSON, not a record
    assert main(["compare", str(a), str(b)]) == 2
    assert f"{samples}:5: not a valid sample record (KeyError" in capsys.readouterr().err


def test_unexpected_error_is_exit_2_not_1(tmp_path: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 1 means "regression found": a malformed results.json or a crash must never look like one."""
    a, b = _gsm8k_runs(tmp_path)
    results = json.loads((b / "results.json").read_text())
    results["tasks"]["gsm8k"]["metrics"]["exact_match_strict"] = "oops"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text(json.dumps(results))
    (broken / "samples.jsonl").write_text((b / "samples.jsonl").read_text())
    assert main(["gate", "--baseline", str(a), "--candidate", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "is not an evalsuite results file" in err and len(err.strip().splitlines()) == 1

    def crash(*args: object, **kwargs: object) -> None:  # fault injection: a bug inside the gate
        raise AttributeError("'NoneType' object has no attribute 'value'")

    monkeypatch.setattr("evalsuite.reports.gate.gate", crash)
    assert main(["gate", "--baseline", str(a), "--candidate", str(b)]) == 2
    err = capsys.readouterr().err
    assert "gate could not check the runs: AttributeError" in err and len(err.strip().splitlines()) == 1


def _gate_args(argv: list[str]) -> argparse.Namespace:
    from evalsuite.reports.cli import configure_gate

    parser = argparse.ArgumentParser()
    configure_gate(parser)
    return parser.parse_args(argv)


def test_gate_run_reuses_the_baselines_judge_and_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    base = write_run(tmp_path / "base", {"winrate": SynthTask({"win": [1.0, 0.0]})}, model="a")
    results = json.loads((base / "results.json").read_text())
    results["config"].update({"data_dir": str(data), "judge": "openai:judge-model",
                              "judge_args": {"base_url": "http://127.0.0.1:9/v1"}, "limit": 2})
    (base / "results.json").write_text(json.dumps(results))
    from evalsuite.reports.cli import candidate_config

    cfg = candidate_config(_gate_args(["--baseline", str(base), "--run", "--model", "openai:cand"]))
    assert (cfg.judge, cfg.judge_args, cfg.data_dir, cfg.limit) == (
        "openai:judge-model", {"base_url": "http://127.0.0.1:9/v1"}, str(data), 2)
    cfg = candidate_config(_gate_args(["--baseline", str(base), "--run", "--model", "openai:cand",
                                       "--judge", "openai:other", "--judge-args", "api_key=x",
                                       "--data-dir", str(tmp_path)]))
    assert (cfg.judge, cfg.judge_args, cfg.data_dir) == ("openai:other", {"api_key": "x"}, str(tmp_path))
    cfg = candidate_config(_gate_args(["--baseline", str(base), "--run", "--model", "openai:cand",
                                       "--judge", "openai:other"]))
    assert (cfg.judge, cfg.judge_args) == ("openai:other", {})  # the baseline's args were for its own judge
