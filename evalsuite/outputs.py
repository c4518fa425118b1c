"""Outputs made elsewhere, for `evalsuite score --outputs`: read, matched to a task's samples, checked.

Every sample without an output is counted (and fails the command unless --allow-missing); two outputs for
one id are refused, since the score would depend on line order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.progress import console
from evalsuite.records import Output, SampleRecord
from evalsuite.task import Task, TaskContext


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Outputs made elsewhere: JSONL objects, or a CSV with a header row (e.g. published model answers)."""
    if not path.is_file():
        raise UsageError(f"outputs file not found: {path}")
    if path.suffix.lower() == ".csv":
        import csv

        try:
            with path.open(encoding="utf-8", newline="") as f:
                return [dict(row) for row in csv.DictReader(f)]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"{path} is not a readable CSV file: {exc}") from exc
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{path}:{n} is not valid JSON: {exc.msg}") from exc
                if not isinstance(row, dict):
                    raise UsageError(f"{path}:{n}: expected a JSON object like {{\"id\": ..., \"output\": ...}}, "
                                     f"got a JSON {type(row).__name__}")
                rows.append(row)
    return rows


def records_from_outputs(name: str, task: Task, rows: list[dict[str, Any]], ctx: TaskContext,
                          path: Path) -> tuple[list[SampleRecord], list[str]]:
    """One record per sample that has an output, and the ids of those that have none."""
    from rich.markup import escape

    every = task.load(ctx)
    samples = every[: ctx.limit] if ctx.limit else every
    texts = task.parse_outputs(rows, every)
    per_prompt = max(1, ctx.samples_per_task)
    doubled = repeated_ids(rows, per_prompt)
    if doubled:
        shown = ", ".join(doubled[:5]) + (f" and {len(doubled) - 5} more" if len(doubled) > 5 else "")
        raise UsageError(f"{path}: {len(doubled)} sample id(s) of task '{name}' have more outputs than "
                         f"--samples-per-task {per_prompt} ({shown}); keep one line per id, or pass --samples-per-task")
    for sid, t in texts.items():
        if not all(isinstance(x, str) for x in t):
            raise UsageError(f"{path}: the output for id {sid!r} is not a string (got {type(t[0]).__name__})")
    records = [SampleRecord(name, s, task.requests(s), [Output(texts=texts[s.id])]) for s in samples if s.id in texts]
    if not records:
        raise UsageError(f"{path}: no line matches a sample id of task '{name}' "
                         f"(its ids look like {', '.join(s.id for s in samples[:2])})")
    unknown = set(texts) - {s.id for s in every}
    if unknown:
        console.print(f"[yellow]warning:[/yellow] {len(unknown)} output ids are not samples of '{name}' (e.g. {escape(str(sorted(unknown)[:3]))})")
    return records, [s.id for s in samples if s.id not in texts]


ROW_ID_KEYS = ("id", "sample_id", "task_id", "question_id", "key", "prompt")  # what names a line's sample


def repeated_ids(rows: list[dict[str, Any]], allowed: int) -> list[str]:
    """Ids named by more than `allowed` lines: with one answer kept, the score would depend on line order.

    Counted over lines, not parsed texts: a multi-turn answer (MT-Bench's `turns`) is one line with
    several texts."""
    counts: dict[str, int] = {}
    for row in rows:
        key = next((k for k in ROW_ID_KEYS if k in row), None)
        if key is not None:
            sid = str(row[key])
            counts[sid] = counts.get(sid, 0) + 1
    return sorted(sid for sid, n in counts.items() if n > allowed)


def check_missing(missing: dict[str, list[str]], allow_missing: bool, path: Path) -> None:
    """Samples without an output are counted and recorded; they fail the command unless --allow-missing."""
    from rich.markup import escape

    for name, ids in missing.items():
        if not ids:
            continue
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        line = f"{path}: {len(ids)} sample(s) of task '{name}' have no output ({shown})"
        if not allow_missing:
            raise UsageError(line + "; pass --allow-missing to score the rest (they are recorded as missing)")
        console.print(f"[yellow]warning:[/yellow] {escape(line)}; recorded as missing in results.json")
