"""The training run's log exists from the start: a run killed before its first checkpoint reads as interrupted,
and its restart keeps the time it was first started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalsuite.rundir import load_results
from tests.test_trainer_run import _write_config


@pytest.mark.slow
def test_killed_before_the_first_checkpoint_reads_interrupted_and_restart_keeps_created(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    """Catches a trainer that writes results.json only at its first checkpoint (a run killed before it leaves no
    run log, so nothing can say it was interrupted), and a restart that resets `created` when no checkpoint
    exists yet."""
    cfg = _write_config(tmp_path, tiny_model_dir, training={"max_steps": 400}, eval={"every": 200})
    run = tmp_path / "runs" / "t"
    cmd = [sys.executable, "-m", "evalsuite.cli", "train", str(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.time() + 240
    while not (run / "results.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log = load_results(run)
    assert not (run / "checkpoints" / "step-200").exists(), "killed too late: the first checkpoint was written"
    assert (log.status, log.state()) == ("running", "interrupted")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    done = load_results(run)
    assert done.status == "complete" and done.created == log.created
