"""The command line: one-line errors with exit 2, a fast `list`, the run table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import write_gsm8k


def evalsuite(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evalsuite.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines and "error" in lines[-1]
    for needle in needles:
        assert needle in proc.stderr


def test_unknown_task_suggests(tmp_path: Path) -> None:
    proc = evalsuite("run", "--model", "smollm2-135m", "--tasks", "gsm8kk", "--output-dir", str(tmp_path))
    assert_one_line_error(proc, "unknown task 'gsm8kk'", "gsm8k")


def test_unknown_backend(tmp_path: Path) -> None:
    proc = evalsuite("run", "--model", "x", "--backend", "nope", "--tasks", "gsm8k",
                     "--data-dir", str(write_gsm8k(tmp_path)), "--output-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "unknown backend 'nope'")


def test_missing_model_path(tmp_path: Path) -> None:
    proc = evalsuite("run", "--model", str(tmp_path / "no-such-model"), "--tasks", "gsm8k",
                     "--data-dir", str(write_gsm8k(tmp_path)), "--output-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "model path not found")


def test_malformed_model_args(tmp_path: Path) -> None:
    proc = evalsuite("run", "--model", "smollm2-135m", "--tasks", "gsm8k", "--model-args", "dtype",
                     "--output-dir", str(tmp_path))
    assert_one_line_error(proc, "malformed --model-args")


def test_unknown_model_arg_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = evalsuite("run", "--model", str(tiny_model_dir), "--tasks", "gsm8k", "--model-args", "colour=red",
                     "--data-dir", str(write_gsm8k(tmp_path)), "--output-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "colour", "valid keys")


def test_missing_data(tmp_path: Path) -> None:
    proc = evalsuite("run", "--model", "smollm2-135m", "--tasks", "gsm8k", "--data-dir", str(tmp_path / "nodata"),
                     "--output-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "missing data", "gsm8k")


def test_unwritable_output_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    proc = evalsuite("run", "--model", "smollm2-135m", "--tasks", "gsm8k", "--data-dir", str(write_gsm8k(tmp_path)),
                     "--output-dir", str(blocker / "runs"))
    assert_one_line_error(proc, "cannot write the run directory", "--output-dir")


@pytest.mark.parametrize("limit", ["0", "-3", "ten"])
def test_bad_limit(limit: str, tmp_path: Path) -> None:
    proc = evalsuite("run", "--model", "smollm2-135m", "--tasks", "gsm8k", "--limit", limit)
    assert_one_line_error(proc, "--limit")


def test_missing_outputs_file(tmp_path: Path) -> None:
    proc = evalsuite("score", "--tasks", "gsm8k", "--outputs", str(tmp_path / "none.jsonl"),
                     "--data-dir", str(write_gsm8k(tmp_path)), "--output-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "outputs file not found")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir()), "bad input leaves no empty run dir"


def test_rescoring_a_run_without_the_task_leaves_no_run_dir(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "results.json").write_text('{"model": {}, "tasks": {}}')
    (src / "samples.jsonl").write_text("")
    proc = evalsuite("score", "--tasks", "gsm8k", "--run-dir", str(src), "--data-dir", str(write_gsm8k(tmp_path)),
                     "--output-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "has no samples for task")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir()), "bad input leaves no empty run dir"


def test_list_is_fast_and_imports_no_torch() -> None:
    code = ("import sys; from evalsuite.cli import main; rc = main(['list']); "
            "print('HEAVY' if {'torch', 'transformers', 'pandas'} & set(sys.modules) else 'LIGHT', rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().endswith("LIGHT 0"), proc.stdout + proc.stderr
    assert "gsm8k" in proc.stdout and "mmlu" in proc.stdout and "hf" in proc.stdout


def test_run_prints_table_and_debug_shows_traceback(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_gsm8k(tmp_path / "d")
    proc = evalsuite("run", "--model", str(tiny_model_dir), "--tasks", "gsm8k", "--limit", "2",
                     "--data-dir", str(data), "--output-dir", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert "exact_match_strict" in proc.stderr and "gsm8k" in proc.stderr
    (run_dir,) = (tmp_path / "r").iterdir()
    assert (run_dir / "results.json").is_file() and (run_dir / "samples.jsonl").is_file()
    proc = evalsuite("--debug", "run", "--model", "smollm2-135m", "--tasks", "gsm8kk")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
