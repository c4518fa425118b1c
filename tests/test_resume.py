"""A run killed with SIGKILL resumes from the cache: nothing finished is recomputed, same results."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from .conftest import write_gsm8k

N = 60


def _start(model: Path, data: Path, out: Path, cache: Path) -> subprocess.Popen:
    args = ["run", "--model", str(model), "--tasks", "gsm8k", "--task-args", "max_tokens=48", "--batch-size", "1",
            "--data-dir", str(data), "--output-dir", str(out), "--cache-path", str(cache)]
    return subprocess.Popen([sys.executable, "-m", "evalsuite.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})


def _rows(cache: Path) -> int:
    try:
        with sqlite3.connect(cache, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.Error:
        return 0


def _results(out: Path) -> tuple[dict, list[dict]]:
    (run_dir,) = [p for p in out.iterdir() if (p / "samples.jsonl").exists()]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    for s in samples:
        for o in s["outputs"]:
            o["extra"].pop("cached", None)
            o["latency_s"] = 0
    return json.loads((run_dir / "results.json").read_text()), samples


def test_sigkill_then_resume(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_gsm8k(tmp_path / "data", n_test=N)
    # the reference: an uninterrupted run with its own cache
    ref = _start(tiny_model_dir, data, tmp_path / "ref", tmp_path / "ref.sqlite")
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()[-2000:]

    cache = tmp_path / "killed.sqlite"
    proc = _start(tiny_model_dir, data, tmp_path / "killed", cache)
    deadline = time.time() + 240
    while _rows(cache) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _rows(cache)
    assert 0 < done_before < N, f"the kill should land mid-run (cached {done_before} of {N})"

    resumed = _start(tiny_model_dir, data, tmp_path / "resumed", cache)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    results, samples = _results(tmp_path / "resumed")
    timing = results["tasks"]["gsm8k"]["timing"]
    assert timing["cached"] == done_before, "every request finished before the kill came from the cache"
    assert timing["requests"] - timing["cached"] == N - done_before, "nothing else was recomputed"
    ref_results, ref_samples = _results(tmp_path / "ref")
    assert results["tasks"]["gsm8k"]["metrics"] == ref_results["tasks"]["gsm8k"]["metrics"]
    assert [s["outputs"] for s in samples] == [s["outputs"] for s in ref_samples]
