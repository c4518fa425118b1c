"""`evalsuite gate`: regressions caught, noise passed, rules, exit codes 0/1/2, JUnit XML, `--run`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalsuite.cli import main
from evalsuite.errors import UsageError
from evalsuite.reports.compare import compare, load_runs
from evalsuite.reports.gate import FAIL, PASS, SKIP, gate, load_rules, parse_rules
from evalsuite.reports.junit import render_junit
from tests.conftest import SHARED_DATA, write_gsm8k
from tests.fixtures_runs import SynthTask, binary, flip, write_run

N = 400
BASE = binary(N, 0.6, seed=11)

# Jenkins' xunit schema (jenkinsci/xunit-plugin junit-10.xsd), kept in the shared dir beside the checkout.
JUNIT_XSD = SHARED_DATA.parent / "schemas" / "junit-10.xsd"


def runs(tmp: Path, cand: list[float], base: list[float] = BASE, **task_kw) -> tuple[Path, Path]:
    a = write_run(tmp / "base", {"qa": SynthTask({"acc": base}, **task_kw)}, model="base")
    b = write_run(tmp / "cand", {"qa": SynthTask({"acc": cand}, **task_kw)}, model="cand")
    return a, b


def verdict(a: Path, b: Path, rules: dict | None = None):
    return gate(compare(load_runs([a, b]), n_boot=2000), parse_rules(rules))


def acc_check(result):
    return next(c for c in result.checks if c.metric == "acc" and c.group is None)


def test_real_regression_is_caught(tmp_path: Path) -> None:
    a, b = runs(tmp_path, flip(BASE, down=30, up=6, seed=1))  # -6 points, p ~ 1e-4
    result = verdict(a, b)
    check = acc_check(result)
    assert result.exit_code == 1 and check.status == FAIL
    assert "dropped by 0.0600 (6.00 pts)" in check.message and check.pvalue < 1e-3


def test_noise_is_not_flagged(tmp_path: Path) -> None:
    """A 1.5-point drop from 9 flips down and 3 up is over the drop limit but not significant."""
    a, b = runs(tmp_path, flip(BASE, down=9, up=3, seed=2))
    result = verdict(a, b)
    check = acc_check(result)
    assert result.exit_code == 0 and check.status == PASS
    assert "not significant" in check.message and "noise" in check.message and check.pvalue > 0.05
    strict = verdict(a, b, {"defaults": {"require_significance": False}})
    assert strict.exit_code == 1 and acc_check(strict).status == FAIL


def test_threshold_rules(tmp_path: Path) -> None:
    a, b = runs(tmp_path, flip(BASE, down=30, up=6, seed=1))
    assert verdict(a, b, {"rules": [{"task": "q*", "metric": "acc", "max_drop": 0.08}]}).exit_code == 0
    assert verdict(a, b, {"rules": [{"task": "qa", "max_drop": None, "max_drop_relative": 0.2}]}).exit_code == 0
    assert verdict(a, b, {"rules": [{"task": "qa", "max_drop": None, "max_drop_relative": 0.05}]}).exit_code == 1
    ignored = verdict(a, b, {"rules": [{"task": "qa", "metric": "acc", "ignore": True}]})
    assert ignored.exit_code == 0 and acc_check(ignored).status == SKIP
    same_a, same_b = runs(tmp_path / "same", BASE)
    floor = verdict(same_a, same_b, {"rules": [{"metric": "acc", "min_score": 0.9}]})
    assert floor.exit_code == 1 and "below the minimum 0.9" in acc_check(floor).message


def test_lower_is_better_and_aggregate_only(tmp_path: Path) -> None:
    loss_a = [1.0 + 0.01 * (i % 10) for i in range(200)]
    loss_b = [v + 0.2 for v in loss_a]  # loss rose: a regression although the number went up
    extra_a = {"metrics": {"pass@5": {"value": 0.50, "stderr": 0.02, "n": 200}}}
    extra_b = {"metrics": {"pass@5": {"value": 0.40, "stderr": 0.02, "n": 200}}}
    lower = {"loss": False}  # declared by the task, recorded in results.json
    a = write_run(tmp_path / "a", {"lm": SynthTask({"loss": loss_a}, extra=extra_a, higher_is_better=lower)})
    b = write_run(tmp_path / "b", {"lm": SynthTask({"loss": loss_b}, extra=extra_b, higher_is_better=lower)}, model="b")
    result = verdict(a, b)
    by_metric = {c.metric: c for c in result.checks}
    assert by_metric["loss"].status == FAIL and "rose by 0.2000" in by_metric["loss"].message
    assert by_metric["pass@5"].status == FAIL and "no significance test possible" in by_metric["pass@5"].message


def test_group_rules_and_new_errors(tmp_path: Path) -> None:
    groups = ["x", "y"] * (N // 2)
    cand = list(BASE)
    for i in [i for i in range(0, N, 2) if BASE[i] == 1.0][:25]:
        cand[i] = 0.0  # subtask x loses 25 samples
    a, b = runs(tmp_path, cand, groups=groups)
    top_only = verdict(a, b, {"defaults": {"max_drop": 0.2}})
    assert top_only.exit_code == 0 and all(c.group is None for c in top_only.checks)
    per_group = verdict(a, b, {"defaults": {"max_drop": 0.2},
                               "rules": [{"task": "qa", "group": "*", "max_drop": 0.05}]})
    failed = [(c.name, c.metric) for c in per_group.failed]
    assert failed == [("qa/x", "acc")]
    e_a, e_b = runs(tmp_path / "err", BASE)
    e_b = write_run(tmp_path / "err" / "cand2", {"qa": SynthTask({"acc": BASE}, errors=frozenset({1, 2}))}, model="c")
    result = verdict(e_a, e_b)
    errors = next(c for c in result.checks if c.metric == "new_errors")
    assert errors.status == FAIL and "2 sample(s) failed in the candidate only" in errors.message
    assert any("left out of the paired tests" in w for w in result.comparison.warnings)


def test_bad_rules_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown key\(s\) \['max_dorp'\]"):
        parse_rules({"rules": [{"task": "qa", "max_dorp": 0.1}]})
    with pytest.raises(UsageError, match="alpha must be between 0 and 1"):
        parse_rules({"defaults": {"alpha": 5}})
    bad = tmp_path / "gate.yaml"
    bad.write_text("rules: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_rules(bad)
    example = Path(__file__).resolve().parents[1] / "examples" / "gate.yaml"
    assert load_rules(example).rules, "examples/gate.yaml parses and has rules"


def junit_schema():
    """The xunit schema from the shared dir; in CI (CI=true) a missing schema is a failure, not a skip."""
    etree = pytest.importorskip("lxml.etree", reason="lxml not installed")
    if not JUNIT_XSD.is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{JUNIT_XSD} is missing: CI must validate the JUnit output against it")
        pytest.skip(f"no JUnit schema at {JUNIT_XSD} (set EVALSUITE_DATA_DIR to shared/data)")
    return etree, etree.XMLSchema(file=str(JUNIT_XSD))


def test_junit_validates_against_the_jenkins_xunit_schema(tmp_path: Path) -> None:
    """Catches attributes or nesting the xunit schema rejects (e.g. `skipped` on <testsuites>)."""
    etree, schema = junit_schema()
    a, b = runs(tmp_path, flip(BASE, down=30, up=6, seed=1), groups=["x <&>", "y"] * (N // 2))
    result = verdict(a, b, {"rules": [{"task": "qa", "group": "*"}, {"metric": "acc", "group": "y", "ignore": True}]})
    xml = render_junit(result, summary="summary with <markup> & 'quotes'")
    doc = etree.fromstring(xml.encode())
    assert schema.validate(doc), schema.error_log
    suite = doc.find("testsuite")
    assert int(suite.get("tests")) == len(result.checks) == len(suite.findall("testcase"))
    assert int(suite.get("failures")) == len(doc.findall(".//failure")) == len(result.failed) >= 1
    assert int(suite.get("skipped")) == len(doc.findall(".//skipped")) == 1
    assert doc.find(".//testcase[@classname='evalsuite.qa/x <&>']") is not None
    assert all(line in suite.find("system-out").text for line in result.notes) and result.notes
    doc.set("skipped", "1")  # what evalsuite used to write on <testsuites>: the schema rejects it
    assert not schema.validate(doc)


def test_cli_exit_codes_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, bad = runs(tmp_path, flip(BASE, down=30, up=6, seed=1))
    good = write_run(tmp_path / "good", {"qa": SynthTask({"acc": flip(BASE, 2, 3, seed=5)})}, model="good")
    md, junit = tmp_path / "out" / "summary.md", tmp_path / "out" / "junit.xml"
    common = ["--n-boot", "1000", "--markdown", str(md), "--junit", str(junit)]
    assert main(["gate", "--baseline", str(a), "--candidate", str(good), *common]) == 0
    assert "PASS" in capsys.readouterr().out and "✅ **PASS**" in md.read_text()
    assert main(["gate", "--baseline", str(a), "--candidate", str(bad), *common]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "dropped by 0.0600" in out and 'failures="1"' in junit.read_text()
    assert main(["gate", "--baseline", str(a), "--candidate", str(bad), "--max-drop", "0.1"]) == 0
    capsys.readouterr()
    other = write_run(tmp_path / "other", {"qa": SynthTask({"acc": BASE[:-1]})}, model="other")
    assert main(["gate", "--baseline", str(a), "--candidate", str(other)]) == 2
    assert "sample sets differ: 1 only in base ('qa-399')" in capsys.readouterr().err
    assert main(["gate", "--baseline", str(a), "--candidate", str(other), "--allow-mismatch"]) == 0
    assert "compared anyway" in capsys.readouterr().out
    assert main(["gate", "--baseline", str(a), "--candidate", str(tmp_path / "missing")]) == 2
    assert main(["gate", "--baseline", str(a)]) == 2
    assert "--candidate RUN, or --run" in capsys.readouterr().err


def test_console_script_exit_code(tmp_path: Path) -> None:
    """The installed command, as CI calls it: a real process and its exit status."""
    a, b = runs(tmp_path, flip(BASE, down=30, up=6, seed=1))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "evalsuite.cli", "gate", "--baseline", str(a), "--candidate", str(b), "--n-boot", "500"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "evalsuite gate: FAIL (1 of" in proc.stdout


@pytest.mark.slow
def test_gate_run_mode(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """`gate --run`: the candidate is evaluated with the baseline's configuration, then gated."""
    data = write_gsm8k(tmp_path / "data", n_test=4)
    out = tmp_path / "runs"
    assert main(["run", "--model", str(tiny_model_dir), "--tasks", "gsm8k", "--limit", "3", "--data-dir", str(data),
                 "--output-dir", str(out), "--task-args", "num_fewshot=0,max_tokens=8"]) == 0
    (baseline,) = out.iterdir()
    capsys.readouterr()
    junit = tmp_path / "junit.xml"
    code = main(["gate", "--baseline", str(baseline), "--run", "--model", str(tiny_model_dir),
                 "--data-dir", str(data), "--output-dir", str(out), "--junit", str(junit), "--n-boot", "200"])
    assert code == 0, capsys.readouterr()
    candidate = [p for p in out.iterdir() if p != baseline]
    assert len(candidate) == 1, "the candidate run dir was written"
    assert len(load_runs([baseline, candidate[0]])[1].records) == 3  # the baseline's --limit was reused
    assert "PASS" in capsys.readouterr().out and 'failures="0"' in junit.read_text()


def test_github_actions_example_is_valid() -> None:
    """examples/github-actions-gate.yml is valid YAML and its gate command parses with our arguments."""
    import argparse
    import shlex

    import yaml

    from evalsuite.reports.cli import configure_gate

    workflow = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "github-actions-gate.yml").read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    script = next(s["run"] for s in steps if "evalsuite gate" in s.get("run", ""))
    argv = shlex.split(script.replace("\\\n", " ").replace("$GITHUB_STEP_SUMMARY", "summary.md"))
    assert argv[:2] == ["evalsuite", "gate"]
    parser = argparse.ArgumentParser()
    configure_gate(parser)
    args = parser.parse_args(argv[2:])
    assert args.run and args.model and args.junit and args.markdown == "summary.md" and args.rules
    assert (Path(__file__).resolve().parents[1] / args.rules).is_file()


def test_ci_log_keeps_long_task_and_metric_names_on_one_line(tmp_path: Path) -> None:
    """In a CI log (no terminal) rich would fold names at 80 columns and break grep."""
    task = "mmlu_high_school_government_and_politics"
    metric = "prompt_level_strict_accuracy"
    scores = {metric: binary(40, 0.6, seed=3)}
    a = write_run(tmp_path / "a", {task: SynthTask(scores)})
    b = write_run(tmp_path / "b", {task: SynthTask(scores)})
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    cmd = [sys.executable, "-m", "evalsuite.cli", "gate", "--baseline", str(a), "--candidate", str(b)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert any(task in line and metric in line for line in proc.stdout.splitlines()), proc.stdout
