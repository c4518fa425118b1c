"""Optional decontamination of the training conversations against the eval tasks they are scored on.

The n-gram method lives in `evalsuite.datagen.decontam` (lm-eval's janitor, shared with
`evalsuite data`); this only adapts conversations to its rows and writes the report next to the run,
so a checkpoint's scores can be read knowing whether the training data had seen the test.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalsuite.trainers.data import Conversation

REPORT = "decontamination.json"


def clean(datasets: Sequence[list[Conversation]], tasks: list[str], data_dir: str | None, action: str,
          run_dir: Path, seed: int = 1234) -> list[list[Conversation]]:
    """Each dataset's conversations, the contaminated ones dropped (action "drop") or kept ("report")."""
    from evalsuite.datagen.decontam import decontaminate, summary_lines
    from evalsuite.progress import console
    from evalsuite.task import TaskContext

    flat = [(k, i) for k, convs in enumerate(datasets) for i in range(len(convs))]
    rows = [{"messages": datasets[k][i].messages} for k, i in flat]
    report: dict[str, Any] = decontaminate(rows, tasks, TaskContext.from_env(data_dir, seed=seed))
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
