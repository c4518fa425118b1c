"""Terminal tables stay greppable in a CI log (stderr piped, no COLUMNS): one row, one title per line."""

from __future__ import annotations

import os
import subprocess
import sys

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
