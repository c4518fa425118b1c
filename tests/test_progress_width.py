"""The run's score table stays greppable in a CI log (stderr piped, no COLUMNS): one row per line."""

from __future__ import annotations

import os
import subprocess
import sys

TASK = "lm_eval:a_rather_long_group_name/with_a_long_subtask_name"
METRIC = "prompt_level_strict_accuracy_with_filters"
PRINT_TABLE = (
    "from evalsuite.progress import console, score_table\n"
    f"console.print(score_table({{'tasks': {{{TASK!r}: {{'metrics': {{{METRIC!r}: "
    "{'value': 0.123456, 'stderr': 0.01, 'n': 1319}}}}}, 'run 2026-12-03T10:00:00 smollm2-135m on hf'))\n"
)


def table_lines(**env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | env
    proc = subprocess.run([sys.executable, "-c", PRINT_TABLE], capture_output=True, text=True, env=environ,
                          timeout=60, check=True)  # stderr is a pipe, as in CI
    return proc.stderr.splitlines()


def test_piped_without_columns_a_row_is_one_line() -> None:
    """At rich's fallback of 80 columns this row folds and `grep TASK.*METRIC` finds nothing."""
    row = [line for line in table_lines() if TASK in line]
    assert len(row) == 1 and METRIC in row[0] and "0.1235" in row[0] and "1319" in row[0], table_lines()


def test_columns_is_still_honoured() -> None:
    """COLUMNS set (a user's choice) keeps rich's own width: the same row folds at 80."""
    lines = table_lines(COLUMNS="80")
    assert max(len(line) for line in lines) <= 80
    assert not any(TASK in line and METRIC in line for line in lines)
