"""The run's score table stays greppable in a CI log (stderr piped, no COLUMNS): one row per line."""

from __future__ import annotations

import os
import subprocess
import sys

TASK = "lm_eval:a_rather_long_group_name/with_a_long_subtask_name"
METRIC = "prompt_level_strict_accuracy_with_filters"
TITLE = "smollm2-135m  →  /home/someone/projects/evalsuite/runs/20261203-110852-smollm2-135m-capitals"
SHORT = {"tasks": {"capitals": {"metrics": {"exact": {"value": 0.5, "stderr": 0.1, "n": 3}}}}}
RESULTS = {"tasks": {TASK: {"metrics": {METRIC: {"value": 0.123456, "stderr": 0.01, "n": 1319}}}}}
PRINT_TABLE = f"from evalsuite.progress import console, score_table\nconsole.print(score_table({RESULTS!r}, {TITLE!r}))\n"


def table_lines(**env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | env
    proc = subprocess.run([sys.executable, "-c", PRINT_TABLE], capture_output=True, text=True, env=environ,
                          timeout=60, check=True)  # stderr is a pipe, as in CI
    return proc.stderr.splitlines()


def test_piped_without_columns_a_row_is_one_line() -> None:
    """At rich's fallback of 80 columns this row folds and `grep TASK.*METRIC` finds nothing."""
    lines = table_lines()
    row = [line for line in lines if TASK in line]
    assert len(row) == 1 and METRIC in row[0] and "0.1235" in row[0] and "1319" in row[0], lines


def test_title_with_the_run_dir_is_one_line() -> None:
    """rich wraps a title to its table's width: a narrow table (short names) split the run dir's path."""
    code = (f"from evalsuite.progress import console, score_table\n"
            f"console.print(score_table({SHORT!r}, {TITLE!r}))\n")
    environ = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=60,
                         check=True).stderr
    assert any(TITLE in line for line in out.splitlines()), out


def test_columns_is_still_honoured() -> None:
    """COLUMNS set (a user's choice) keeps rich's own width: the same row folds at 80."""
    lines = table_lines(COLUMNS="80")
    assert max(len(line) for line in lines) <= 80
    assert not any(TASK in line and METRIC in line for line in lines)
