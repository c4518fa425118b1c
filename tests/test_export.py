"""`--export lm-eval`: lm-eval's results-JSON shape, read back by lm-eval's own table printer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalsuite.errors import UsageError
from evalsuite.export import check_formats, export_run

from .fixtures_runs import SynthTask, binary, write_run


def test_unknown_format_is_a_usage_error() -> None:
    check_formats(["lm-eval"])
    with pytest.raises(UsageError, match="unknown --export format.*'csv'.*known: lm-eval"):
        check_formats(["lm-eval", "csv"])


def test_lm_eval_shape_read_by_lm_evals_make_table(tmp_path: Path) -> None:
    from lm_eval.utils import make_table

    subjects = ["anatomy", "virology"] * 5
    run = write_run(tmp_path / "run", {
        "mmlu": SynthTask({"acc": binary(10, 0.5, 1)}, groups=subjects, config={"num_fewshot": 5}),
        "gsm8k": SynthTask({"exact_match_strict": binary(10, 0.3, 2)}),
        "lm_eval:mytask": SynthTask({"acc": [1.0], "exact_match,strict-match": [0.0]},
                                    extra={"lm_eval": {"task": "mytask", "n_shot": 3,
                                                       "higher_is_better": {"acc": True, "exact_match": True}}}),
    })
    (path,) = export_run(run, ["lm-eval"])
    assert path == run / "results_lm-eval.json"
    out = json.loads(path.read_text())
    src = json.loads((run / "results.json").read_text())["tasks"]
    assert out["results"]["mmlu"]["acc,none"] == src["mmlu"]["metrics"]["acc"]["value"]
    assert out["results"]["mmlu"]["acc_stderr,none"] == src["mmlu"]["metrics"]["acc"]["stderr"]
    assert out["results"]["mmlu_anatomy"]["acc,none"] == src["mmlu"]["groups"]["anatomy"]["acc"]["value"]
    assert out["group_subtasks"]["mmlu"] == ["mmlu_anatomy", "mmlu_virology"]
    assert out["n-shot"]["mmlu"] == 5 and out["n-shot"]["mytask"] == 3
    assert out["results"]["mytask"]["exact_match,strict-match"] == 0.0
    assert out["results"]["mytask"]["acc_stderr,none"] == "N/A"  # one sample: no stderr, as lm-eval writes it
    assert out["n-samples"]["gsm8k"] == {"original": 10, "effective": 10}
    table = make_table(out)
    assert "mmlu" in table and " - anatomy" in table and "exact_match_strict" in table and "strict-match" in table


@pytest.mark.slow
def test_cli_run_writes_the_export(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`evalsuite run --export lm-eval` end to end (tiny random model, ARC fixture)."""
    import subprocess
    import sys

    (tmp_path / "data" / "arc").mkdir(parents=True)
    row = {"query": "Question: 1+1?", "choices": ["2", "3", "4", "5"], "gold": 0}
    (tmp_path / "data" / "arc" / "arc_easy_test.jsonl").write_text((json.dumps(row) + "\n") * 3)
    proc = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--model", str(tiny_model_dir),
                           "--tasks", "arc_easy", "--data-dir", str(tmp_path / "data"), "--export", "lm-eval",
                           "--output-dir", str(tmp_path / "runs")], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = (tmp_path / "runs").iterdir()
    out = json.loads((run / "results_lm-eval.json").read_text())
    assert set(out["results"]["arc_easy"]) >= {"alias", "acc,none", "acc_norm,none", "acc_stderr,none"}
    bad = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--model", str(tiny_model_dir),
                          "--tasks", "arc_easy", "--data-dir", str(tmp_path / "data"), "--export", "csv",
                          "--output-dir", str(tmp_path / "runs2")], check=False, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown --export format" in bad.stderr and "Traceback" not in bad.stderr
