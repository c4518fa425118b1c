"""Decontamination of the training conversations against the eval tasks they are scored on.

`evalsuite train` runs it by default against its own `eval.tasks` (`data.decontaminate: false`
turns it off, a list names other tasks). The n-gram method lives in `evalsuite.datagen.decontam`
(lm-eval's janitor, shared with `evalsuite data`); this adapts conversations to its rows, writes the
report next to the run and copies it into every checkpoint's eval run directory, so a score is read
(and `evalsuite compare` shows it) knowing whether the training data had seen the test.

`fingerprint` covers the tasks a checkpoint is scored on later: it stores the 13-grams of the
conversations of the training split (`evalsuite.provenance`; all of them, also any the run did not
reach within max_steps, so an overlap is over- rather than under-reported), which `evalsuite run --model CHECKPOINT`
checks every task's samples against.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from evalsuite.errors import EvalsuiteError, UsageError
from evalsuite.rundir import DECONTAMINATION
from evalsuite.trainers.data import Conversation

REPORT = DECONTAMINATION


def clean(datasets: Sequence[list[Conversation]], tasks: list[str], data_dir: str | None, action: str,
          run_dir: Path, seed: int = 1234, strict: bool = True) -> list[list[Conversation]]:
    """Each dataset's conversations, the contaminated ones dropped (action "drop") or kept ("report").

    strict=False (the automatic check against eval.tasks): a task whose samples cannot be loaded
    here is skipped with a warning and named in the report ("skipped_tasks"), instead of stopping
    the run.
    """
    from evalsuite.datagen.decontam import decontaminate, summary_lines
    from evalsuite.progress import console
    from evalsuite.task import TaskContext

    flat = [(k, i) for k, convs in enumerate(datasets) for i in range(len(convs))]
    rows = [{"messages": datasets[k][i].messages} for k, i in flat]
    try:
        report: dict[str, Any] = decontaminate(rows, tasks, TaskContext.from_env(data_dir, seed=seed),
                                               skip_unavailable=not strict)
    except EvalsuiteError as exc:
        raise UsageError(f"data.decontaminate: {str(exc).splitlines()[0]}") from None
    for name, why in report.get("skipped_tasks", {}).items():
        console.print(f"[yellow]decontamination: skipped {name}: {why}[/yellow]")
    bad = {flat[r] for r in report["contaminated_rows"]}
    report["action"] = action
    report["per_dataset"] = [{"dataset": convs[0].source if convs else str(k), "conversations": len(convs),
                              "contaminated": sum(1 for b in bad if b[0] == k)} for k, convs in enumerate(datasets)]
    (run_dir / REPORT).write_text(json.dumps(report, indent=1))
    for line in summary_lines(report):
        console.print(f"decontamination: {line}")
    if action != "drop":
        return [list(c) for c in datasets]
    return [[c for i, c in enumerate(convs) if (k, i) not in bad] for k, convs in enumerate(datasets)]


def attach(run_dir: Path, eval_dirs: Iterable[Path]) -> None:
    """Copy the run's report into each eval run directory (where `compare` looks for it)."""
    report = run_dir / REPORT
    if report.is_file():
        for d in eval_dirs:
            shutil.copyfile(report, Path(d) / REPORT)


def fingerprint(run_dir: Path, datasets: Sequence[list[Conversation]], names: Sequence[str]) -> Path:
    """Write the run's training-data fingerprints (one file per run; checkpoints link to it).

    `datasets` are the training splits (validation conversations are not trained on), `names`
    the dataset names, in the same order.
    """
    from evalsuite import provenance
    from evalsuite.datagen.rows import row_text

    return provenance.write_fingerprints(
        run_dir, [(name, [row_text({"messages": c.messages}) for c in convs]) for name, convs in zip(names, datasets)])
