"""Terminal output reads well in a CI log (stderr piped, no COLUMNS): one row, one title per line; and
generation progress moves per token, with an early estimate of the run and plain status lines."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

TASK = "lm_eval:a_rather_long_group_name/with_a_long_subtask_name"
METRIC = "prompt_level_strict_accuracy_with_filters"
TITLE = "smollm2-135m  →  /home/someone/projects/evalsuite/runs/20261203-110852-smollm2-135m-capitals"
ROW = f"""
from evalsuite.progress import console, titled_table
t = titled_table({TITLE!r})
for col in ("task", "metric", "value", "± stderr", "n"):
    t.add_column(col)
t.add_row({TASK!r}, {METRIC!r}, "0.1235", "0.0100", "1319")
console.print(t)
"""
SHORT = ROW.replace(repr(TASK), "'capitals'").replace(repr(METRIC), "'exact'")


def printed(code: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | env
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ,
                          timeout=60, check=True)  # stderr (where the console writes) is a pipe, as in CI
    return proc.stderr.splitlines()


def test_piped_without_columns_a_row_is_one_line() -> None:
    """At rich's fallback of 80 columns this row folds and `grep TASK.*METRIC` finds nothing."""
    lines = printed(ROW)
    row = [line for line in lines if TASK in line]
    assert len(row) == 1 and METRIC in row[0] and "0.1235" in row[0] and "1319" in row[0], lines


def test_columns_is_still_honoured() -> None:
    """COLUMNS set (a user's choice) keeps rich's own width: the same row folds at 80."""
    lines = printed(ROW, COLUMNS="80")
    assert max(len(line) for line in lines) <= 80
    assert not any(TASK in line and METRIC in line for line in lines)


def test_title_with_the_run_dir_is_one_line() -> None:
    """rich wraps a title to its table's width: a narrow table (short names) split the run dir's path."""
    lines = printed(SHORT)
    assert any(TITLE in line for line in lines), lines


# ---------------------------------------------------------------- the generated-token bar and the estimate line
class RecordingProgress(Progress):
    """A real rich Progress that records every update it gets, in order."""

    def __init__(self, console: Console) -> None:
        super().__init__(console=console)
        self.events: list[tuple[str, float]] = []

    def update(self, task_id: Any, **fields: Any) -> None:
        super().update(task_id, **fields)
        self.events.append((self._tasks[task_id].description, self._tasks[task_id].completed))


def test_tokens_advance_before_a_request_completes_and_the_estimate_is_printed(tiny_model_dir: Path) -> None:
    """A real HF run through the runner's `serve`: the token bar moves during the first generation,
    before the request bar does, and after the first batch one line estimates the whole run.

    Without `on_tokens` the bar sat at "0/N -- req/s" through a long generation."""
    from evalsuite.backends.hf import HFBackend
    from evalsuite.cache import NullCache
    from evalsuite.records import GenerateRequest
    from evalsuite.runner import serve

    backend = HFBackend(str(tiny_model_dir), batch_size=1)
    out = io.StringIO()
    progress = RecordingProgress(Console(file=out, width=200))
    requests = [GenerateRequest(f"Question {i}: what is {i} plus {i}?", max_tokens=10) for i in range(3)]
    with progress:
        outs = serve(requests, backend, NullCache(), backend.fingerprint, progress, "gsm8k")
    assert all(o.error is None for o in outs)
    first_request = next(k for k, (desc, done) in enumerate(progress.events) if desc == "gsm8k" and done >= 1)
    token_steps = [done for desc, done in progress.events[:first_request] if desc == "gsm8k tokens"]
    assert len(token_steps) >= 2 and token_steps == sorted(token_steps) and token_steps[-1] > 1, progress.events
    assert progress._tasks[1].completed == sum(o.tokens_out for o in outs)  # the bar ends at the real count
    lines = [line for line in out.getvalue().splitlines() if "on the first batch" in line]
    assert len(lines) == 1 and re.match(
        r"gsm8k: ~[\d.]+ tok/s on the first batch \(1 of 3 prompts in \d+ s\); about \d+ s for 3 prompts at max_tokens 10",
        lines[0]), out.getvalue()


def test_ci_log_gets_plain_status_lines() -> None:
    """No TTY: rich draws the bars only when they stop, so the meter prints a line every `every` s."""
    from evalsuite.progress import TokenMeter
    from evalsuite.records import GenerateRequest, Output

    out = io.StringIO()
    now = [0.0]
    with Progress(console=Console(file=out, width=200)) as progress:
        meter = TokenMeter(progress, "ifeval", [GenerateRequest("x", max_tokens=1280)] * 2, every=30,
                           clock=lambda: now[0])
        done = meter.wrap(lambda i, o: None)
        now[0] = 20.0  # the prompts' prefill: no line yet, its first token is no rate
        done.on_tokens(2)
        for _ in range(100):  # then 100 steps of 2 tokens over 50 s: one line 30 s after the first token
            now[0] += 0.5
            done.on_tokens(2)
        done(0, Output(texts=["a"], tokens_out=100))
    lines = [line for line in out.getvalue().splitlines() if line.startswith("ifeval: ")]
    assert lines == ["ifeval: 0/2 prompts, 122 tokens generated, 2.4 tok/s, at most 17 min left"], out.getvalue()
