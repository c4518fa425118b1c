"""CPU-aware generation lengths: a task's own max_tokens is capped on a CPU model, visibly, unless the user set it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalsuite import taskargs
from evalsuite.cpu_defaults import CAPPED_FROM, cap_max_tokens, recorded_config
from evalsuite.runner import build_tasks
from evalsuite.task import TaskContext

from .test_cli import evalsuite


def _tasks(shared_data: Path, task_args: dict | None = None) -> tuple[dict, dict]:
    names = ["ifeval", "gsm8k"]
    ctx = TaskContext.from_env(str(shared_data))
    return build_tasks(names, task_args or {}, ctx), taskargs.by_task(names, task_args or {})


def test_cap_applies_on_cpu_only_to_tasks_above_it(shared_data: Path) -> None:
    """Catches a cap that also shortens tasks already under it (GSM8K's 256), that forgets to record the task's
    own value, or that applies on a GPU."""
    tasks, args = _tasks(shared_data)
    assert cap_max_tokens(tasks, args, "cuda:0", 512) == {}
    assert tasks["ifeval"].max_tokens == 1280
    assert cap_max_tokens(tasks, args, "cpu", 512) == {"ifeval": 1280}
    assert (tasks["ifeval"].max_tokens, tasks["gsm8k"].max_tokens) == (512, 256)
    config = recorded_config(tasks["ifeval"], tasks["ifeval"].config())
    assert config["max_tokens"] == 512 and config[CAPPED_FROM] == 1280
    assert CAPPED_FROM not in recorded_config(tasks["gsm8k"], tasks["gsm8k"].config())


def test_user_value_and_none_keep_the_task_own(shared_data: Path) -> None:
    """Catches a cap that overrides `-T ifeval.max_tokens=1000`, or that ignores `--cpu-max-tokens none`."""
    tasks, args = _tasks(shared_data, {"ifeval": {"max_tokens": 1000}})
    assert cap_max_tokens(tasks, args, "cpu", 512) == {}
    assert tasks["ifeval"].max_tokens == 1000
    tasks, args = _tasks(shared_data)
    assert cap_max_tokens(tasks, args, "cpu", None) == {}
    assert tasks["ifeval"].max_tokens == 1280


@pytest.mark.slow
def test_run_says_and_records_the_cap(tmp_path: Path, shared_data: Path, tiny_model_dir: Path) -> None:
    """A real run on a CPU model: the notice line, the capped value in results.json and in the requests sent, and
    a re-scored run that keeps it.

    Catches the runner not calling the cap (requests at 1,280), results.json not saying it was capped, and
    `score --run-dir` recording the task's own 1,280 for answers made at 4 (compare then refuses the pair)."""
    proc = evalsuite("run", "--model", str(tiny_model_dir), "--tasks", "ifeval", "--limit", "1",
                     "--cpu-max-tokens", "4", "--data-dir", str(shared_data), "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "ifeval: max_tokens 1280 -> 4 on the CPU" in proc.stderr
    assert any("max_tokens (CPU cap)" in line and "task's own 1280" in line for line in proc.stderr.splitlines()), \
        "the score table names the cap"
    (run,) = tmp_path.iterdir()
    config = json.loads((run / "results.json").read_text())["tasks"]["ifeval"]["config"]
    assert (config["max_tokens"], config[CAPPED_FROM]) == (4, 1280)
    record = json.loads((run / "samples.jsonl").read_text().splitlines()[0])
    assert record["requests"][0]["max_tokens"] == 4
    assert record["outputs"][0]["tokens_out"] <= 4
    rescored = evalsuite("score", "--run-dir", str(run), "--tasks", "ifeval", "--data-dir", str(shared_data),
                         "--output-dir", str(tmp_path / "rescored"))
    assert rescored.returncode == 0, rescored.stderr
    (again,) = (tmp_path / "rescored").iterdir()
    assert json.loads((again / "results.json").read_text())["tasks"]["ifeval"]["config"] == config
    same = evalsuite("compare", str(run), str(again))
    assert same.returncode == 0, same.stderr


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_bad_cap_is_one_line(value: str, tmp_path: Path) -> None:
    """Catches a cap of 0 or a word other than none reaching the runner (a run that generates nothing)."""
    proc = evalsuite("run", "--model", "x", "--tasks", "ifeval", "--cpu-max-tokens", value)
    assert proc.returncode == 2 and "--cpu-max-tokens" in proc.stderr and "Traceback" not in proc.stderr
