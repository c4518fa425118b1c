"""Ctrl-C keeps what finished (the README's promise), checked on a real `evalsuite run` process.

A run of two tasks (MMLU, then GSM8K generation) on the tiny random Llama gets SIGINT as soon as
results.json lists the first task. It must exit 130, mark results.json "interrupted", keep the
finished task's metrics and samples, and a re-run of the same command must take every answer of
that task from the cache ("extra": {"cached": true} in samples.jsonl) instead of recomputing it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import write_gsm8k, write_mmlu

FIRST, SECOND = "mmlu", "gsm8k"  # the second generates 256 tokens per question: seconds, time to interrupt it


def _command(model: Path, data: Path, out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "evalsuite.cli", "run", "--model", str(model), "--tasks", f"{FIRST},{SECOND}",
            "-T", "mmlu.num_fewshot=1", "-T", "gsm8k.num_fewshot=1", "--batch-size", "1", "--data-dir", str(data), "--output-dir", str(out),
            "--cache-path", str(cache)]


def _results(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-replace
        return {}


def _run_dir(out: Path) -> Path | None:
    dirs = [p for p in out.glob("*") if (p / "results.json").exists()] if out.exists() else []
    return dirs[0] if len(dirs) == 1 else None


def _interrupt_after_first_task(cmd: list[str], out: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """Start `cmd`, send SIGINT once results.json lists FIRST; the exit status and the run dir."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    deadline = time.time() + 300
    run_dir = None
    while proc.poll() is None and time.time() < deadline:
        run_dir = run_dir or _run_dir(out)
        if run_dir and FIRST in _results(run_dir).get("tasks", {}):
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"the run did not stop within 120 s of SIGINT: {stderr[-2000:]}")
    run_dir = run_dir or _run_dir(out)
    assert run_dir is not None, stderr[-2000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), run_dir


def _samples(run_dir: Path, task: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("task") == task]


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_task_and_a_rerun_takes_it_from_the_cache(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Catches: SIGINT losing results.json or samples.jsonl of a finished task, an exit status other
    than 130, a status other than "interrupted", and a re-run that recomputes finished answers."""
    data = write_mmlu(write_gsm8k(tmp_path / "data", n_test=40))
    cache = tmp_path / "calls.sqlite"

    first, run_dir = _interrupt_after_first_task(_command(tiny_model_dir, data, tmp_path / "a", cache), tmp_path / "a")
    assert first.returncode == 130, first.stderr[-2000:]
    assert "interrupted" in first.stderr and "Traceback" not in first.stderr, first.stderr[-2000:]
    results = _results(run_dir)
    assert results["status"] == "interrupted"
    assert SECOND not in results["tasks"], "SIGINT should land while the second task runs"
    metrics = results["tasks"][FIRST]["metrics"]
    assert metrics and all("value" in m for m in metrics.values()), metrics
    kept = _samples(run_dir, FIRST)
    assert len(kept) == 6 and all(s["outputs"] for s in kept)  # 2 subjects x 3 questions

    second, rerun_dir = _interrupt_after_first_task(_command(tiny_model_dir, data, tmp_path / "b", cache),
                                                    tmp_path / "b")
    assert second.returncode == 130, second.stderr[-2000:]
    rerun = _results(rerun_dir)
    assert rerun["tasks"][FIRST]["metrics"] == metrics
    outputs = [o for s in _samples(rerun_dir, FIRST) for o in s["outputs"]]
    assert outputs and all(o.get("extra", {}).get("cached") is True for o in outputs), \
        "a finished task's answers were recomputed on the re-run"
