"""Are runs comparable? Tasks, status, task versions, task configs, sample ids and sample contents.

Two runs of "the same" task are only comparable when they scored the same samples the same way:
same ids, same inputs and targets (a changed data file keeps the ids), same task version and the
same task configuration (e.g. `num_fewshot`, `max_tokens`, the judge model and prompts). Each
difference is one message; `compare` refuses on any of them unless the caller allows mismatches.
Config keys that describe the host, not the task (the sandbox's measured workers, host factor and
time limits), the judge server's address (its fingerprint), and keys that only one run records (a
run made by an older evalsuite) are notes: printed, never a refusal.
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


HOST_KEYS = ("sandbox_",)  # measured on the machine that scored: differ between a laptop and a CI runner
SERVER_KEYS = {"fingerprint"}  # a judge's fingerprint hashes its base URL: the same judge on another port
_ABSENT = object()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dicts as dotted keys, so a message names the very key that differs."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """'key (a vs b)' for every task-config key whose value differs: (refusals, notes)."""
    fa, fb = _flatten(a or {}), _flatten(b or {})
    hard, soft = [], []
    for k in sorted(set(fa) | set(fb)):
        va, vb = fa.get(k, _ABSENT), fb.get(k, _ABSENT)
        if va == vb or k.rsplit(".", 1)[-1] in SERVER_KEYS:
            continue
        shown = " vs ".join("absent" if v is _ABSENT else _short(v) for v in (va, vb))
        host = k.startswith(HOST_KEYS)
        (soft if host or _ABSENT in (va, vb) else hard).append(f"{k} ({shown})")
    return hard, soft


def _task_problems(task: str, base: RunLog, run: RunLog, base_label: str, label: str,
                   notes: list[str]) -> list[str]:
    problems = []
    base_entry, entry = base.tasks[task], run.tasks[task]
    if entry.version != base_entry.version:
        problems.append(f"task {task}: version differs ({base_label}: {base_entry.version}, {label}: {entry.version})")
    diff, soft = config_diff(base_entry.config, entry.config)
    if diff:
        problems.append(f"task {task}: config differs ({base_label} vs {label}): {'; '.join(diff)}")
    if soft:
        notes.append(f"task {task}: config differs only in host-dependent or unrecorded keys ({base_label} vs "
                     f"{label}): {'; '.join(soft)}")
    base_d, run_d = _digests(base.records_for(task)), _digests(run.records_for(task))
    # ids a run recorded as missing outputs are not a different sample set: the gate's max_missing judges them
    only_a = set(base_d) - set(run_d) - set(entry.missing)
    only_b = set(run_d) - set(base_d) - set(base_entry.missing)
    if only_a or only_b:
        problems.append(f"task {task}: sample sets differ: {len(only_a)} only in {base_label} "
                        f"({_sample_list(list(only_a))}), {len(only_b)} only in {label} ({_sample_list(list(only_b))})")
    changed = [sid for sid in base_d if sid in run_d and base_d[sid] != run_d[sid]]
    if changed:
        problems.append(f"task {task}: {len(changed)} sample(s) have the same id but a different input or target "
                        f"in {label} ({_sample_list(changed)}): the data changed")
    return problems


def check_runs(runs: Sequence[RunLog], labels: Sequence[str],
               tasks: Sequence[str] | None) -> tuple[list[str], list[str], list[str]]:
    """The tasks to compare, every way the runs are not comparable, and notes (one message each)."""
    base = runs[0]
    problems: list[str] = []
    notes: list[str] = []
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
        state = run.results.state()
        if state != "complete":
            hint = " (its process is gone: it was killed)" if state != run.results.status else ""
            problems.append(f"{label} is not a complete run (status: {state}{hint})")
    for task in tasks:
        for run, label in zip(runs[1:], labels[1:]):
            problems += _task_problems(task, base, run, labels[0], label, notes)
    return list(tasks), problems, notes


def decontamination_lines(run: RunLog) -> tuple[list[str], str | None]:
    """The run's decontamination summary (written by the trainer), and a warning if it is unreadable."""
    from evalsuite.rundir import DECONTAMINATION

    path = run.path / DECONTAMINATION
    if not path.is_file():
        return [], None
    from evalsuite.datagen.decontam import summary_lines

    try:
        return summary_lines(json.loads(path.read_text(encoding="utf-8"))), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return [], f"{path} is not a readable decontamination report ({type(exc).__name__}: {exc})"
