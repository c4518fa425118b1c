"""Are runs comparable? Tasks, status, task versions, task configs, sample ids and sample contents.

Two runs of "the same" task are only comparable when they scored the same samples the same way:
same ids, same inputs and targets (a changed data file keeps the ids), same task version and the
same task configuration (e.g. `num_fewshot`, `max_tokens`, the judge). Each difference is one
message; `compare` refuses on any of them unless the caller allows mismatches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evalsuite.errors import UsageError
from evalsuite.records import SampleRecord

if TYPE_CHECKING:
    from evalsuite.rundir import RunLog

MAX_VALUE = 60  # characters of a config value shown in a message


def _sample_list(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in sorted(ids)[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def sample_digest(record: SampleRecord) -> str:
    """A hash of what the model was asked and what it was scored against (input + target)."""
    blob = json.dumps([record.sample.input, record.sample.target], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _digests(records: list[SampleRecord]) -> dict[str, str]:
    return {r.sample.id: sample_digest(r) for r in records}


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def config_diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """'key (a vs b)' for every task-config key whose value differs."""
    a, b = a or {}, b or {}
    return [f"{k} ({_short(a.get(k))} vs {_short(b.get(k))})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _task_problems(task: str, base: RunLog, run: RunLog, base_label: str, label: str) -> list[str]:
    problems = []
    base_entry, entry = base.tasks[task], run.tasks[task]
    if entry.get("version") != base_entry.get("version"):
        problems.append(f"task {task}: version differs ({base_label}: {base_entry.get('version')}, "
                        f"{label}: {entry.get('version')})")
    diff = config_diff(base_entry.get("config"), entry.get("config"))
    if diff:
        problems.append(f"task {task}: config differs ({base_label} vs {label}): {'; '.join(diff)}")
    base_d, run_d = _digests(base.records_for(task)), _digests(run.records_for(task))
    only_a, only_b = set(base_d) - set(run_d), set(run_d) - set(base_d)
    if only_a or only_b:
        problems.append(f"task {task}: sample sets differ: {len(only_a)} only in {base_label} "
                        f"({_sample_list(list(only_a))}), {len(only_b)} only in {label} ({_sample_list(list(only_b))})")
    changed = [sid for sid in base_d if sid in run_d and base_d[sid] != run_d[sid]]
    if changed:
        problems.append(f"task {task}: {len(changed)} sample(s) have the same id but a different input or target "
                        f"in {label} ({_sample_list(changed)}): the data changed")
    return problems


def check_runs(runs: Sequence[RunLog], labels: Sequence[str],
               tasks: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The tasks to compare, and every way the runs are not comparable (one message each)."""
    base = runs[0]
    problems: list[str] = []
    if tasks is None:
        tasks = list(base.tasks)
        for run, label in zip(runs[1:], labels[1:]):
            only_a = [t for t in base.tasks if t not in run.tasks]
            only_b = [t for t in run.tasks if t not in base.tasks]
            if only_a or only_b:
                problems.append(f"tasks differ: only in {labels[0]}: {only_a or '-'}; only in {label}: {only_b or '-'}")
        tasks = [t for t in tasks if all(t in r.tasks for r in runs)]
    else:
        for run, label in zip(runs, labels):
            missing = [t for t in tasks if t not in run.tasks]
            if missing:
                raise UsageError(f"{label} ({run.path}) has no results for task(s) {missing}")
    for run, label in zip(runs, labels):
        if run.results.get("status", "complete") != "complete":
            problems.append(f"{label} is not a complete run (status: {run.results.get('status')})")
    for task in tasks:
        for run, label in zip(runs[1:], labels[1:]):
            problems += _task_problems(task, base, run, labels[0], label)
    return list(tasks), problems


def decontamination_lines(run: RunLog, name: str = "decontamination.json") -> tuple[list[str], str | None]:
    """The run's decontamination summary (written by the trainer), and a warning if it is unreadable."""
    path = run.path / name
    if not path.is_file():
        return [], None
    from evalsuite.datagen.decontam import summary_lines

    try:
        return summary_lines(json.loads(path.read_text(encoding="utf-8"))), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return [], f"{path} is not a readable decontamination report ({type(exc).__name__}: {exc})"
