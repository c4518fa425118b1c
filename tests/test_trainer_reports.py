"""A real trainer run read by compare, gate and the HTML report, through the typed run log alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import write_mmlu
from tests.test_trainer_run import _train, _write_config


@pytest.mark.slow
def test_compare_gate_and_html_on_a_real_trainer_run(tmp_path: Path, tiny_model_dir: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """`compare BASE TRAIN_RUN`, `gate --candidate TRAIN_RUN` and the HTML checkpoint curve on what the trainer wrote.

    Catches: the trainer writing a key the readers do not read (compare once read `best.eval_run` while
    the trainer wrote `eval_runs`, so both commands exited 2 with "sample sets differ"), and an HTML
    report that plots a `checkpoints.json` nothing writes."""
    from evalsuite.cli import main
    from evalsuite.rundir import load_run
    from evalsuite.runner import RunConfig, run_eval

    data_dir = write_mmlu(tmp_path / "data", n_test=2)
    cfg = _write_config(tmp_path, tiny_model_dir, eval={"every": 3, "tasks": ["mmlu"], "limit": 2, "data_dir": str(data_dir),
                                                        "task_args": {"num_fewshot": 1}, "best_metric": "mmlu/acc"})
    proc = _train(cfg)
    train = tmp_path / "runs" / "t"
    # the terminal: one compact line per checkpoint, the full table once at the end
    assert proc.stderr.count("checkpoint: step 3 | train loss (window mean)") == 1, proc.stderr[-2000:]
    assert proc.stderr.count("┃ task ") == 0, "no per-checkpoint score tables between the training bars"
    # the disk: only the newest checkpoint keeps its optimizer state (all that resume needs)
    assert not (train / "checkpoints" / "step-3" / "optimizer.pt").exists()
    assert (train / "checkpoints" / "step-6" / "optimizer.pt").is_file()
    base = run_eval(RunConfig(tasks=["mmlu"], model=str(tiny_model_dir), limit=2, data_dir=str(data_dir),
                              task_args={"num_fewshot": 1}, output_dir=str(tmp_path / "base"), use_cache=False))

    log = load_run(train)
    assert log.results.kind == "training" and log.records, "a trainer run reads as its best checkpoint's samples"
    assert list(log.checkpoints()["step"]) == [3, 6] and log.checkpoints()["best"].sum() == 1
    assert re.fullmatch(r"t@step-\d+", log.name), "the run is named by run and step, not by the base model"
    capsys.readouterr()

    html = tmp_path / "report.html"
    assert main(["compare", str(base), str(train), "--n-boot", "200", "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "mmlu" in out and "acc" in out
    page = html.read_text()
    assert "scores per checkpoint" in page and "t@step-" in page and "<svg" in page

    assert main(["compare", str(train), "--n-boot", "200"]) == 0  # every checkpoint against the first
    assert "t@step-6" in capsys.readouterr().out
    code = main(["gate", "--baseline", str(base), "--candidate", str(train), "--n-boot", "200"])
    assert code in (0, 1), "the gate judged the trainer run (exit 2 would mean it could not read it)"
