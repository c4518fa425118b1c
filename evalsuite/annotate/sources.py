"""Items to annotate, from run directories or from a JSONL/CSV file of prompts and answers.

An item is a dict: `key` (unique), `sample_id`, `task`, `prompt` (one user message per turn),
`answers` ([{"model", "turns": [text per turn]}]), `labels` ({source: label}, e.g. labels a file
already carries) and `reference`. Pairwise makes one item per sample and pair of runs, Likert one
per sample and run, ranking one per sample with every run's answer.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path
from typing import Any

from evalsuite.errors import DataError, UsageError


def from_runs(paths: list[str], mode: str, task: str | None = None, shared_only: bool = False,
              limit: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Items from run dirs of one task, and what the project records about where they came from."""
    from evalsuite import rundir
    from evalsuite.judges.tasking import answers, questions, references

    if not paths:
        raise UsageError("no runs given: pass one or more run directories (evalsuite annotate RUN [RUN ...]) "
                         "or --items FILE")
    if mode == "pairwise" and len(paths) < 2:
        raise UsageError("pairwise mode compares two or more runs: pass at least two run directories")
    if mode == "ranking" and len(paths) < 2:
        raise UsageError("ranking mode orders the answers of two or more runs: pass at least two run directories")
    logs = [rundir.load_run(p) for p in paths]
    task = task or _common_task(paths, logs)
    names: list[str] = []
    per_run: list[dict[str, Any]] = []
    for path, log in zip(paths, logs):
        records = {r.sample.id: r for r in log.records_for(task) if r.error is None and r.outputs}
        if not records:
            have = sorted({r.task for r in log.records})
            raise UsageError(f"{path} has no answered samples of task '{task}' (it has: {', '.join(have) or 'none'}); "
                             "pass --task NAME")
        name = log.name if log.name not in names else f"{log.name} ({Path(path).name})"
        names.append(name)
        per_run.append(records)
    ids = [set(r) for r in per_run]
    shared = set.intersection(*ids)
    if any(s != shared for s in ids) and not shared_only:
        sizes = ", ".join(f"{n}: {len(s)}" for n, s in zip(names, ids))
        raise UsageError(f"the runs answered different samples of '{task}' ({sizes}; {len(shared)} shared): "
                         "pass --shared-only to annotate the shared ones, or runs made with the same --limit")
    if not shared:
        raise UsageError(f"the runs share no answered samples of task '{task}'")
    order = [sid for sid in per_run[0] if sid in shared][:limit]
    items: list[dict[str, Any]] = []
    for sid in order:
        first = per_run[0][sid]
        prompt = questions(first)
        if not prompt:
            prompt = [first.sample.input if isinstance(first.sample.input, str) else json.dumps(first.sample.input)]
        refs = references(first)
        answers_ = [{"model": n, "turns": answers(r[sid], len(prompt)) or [""]} for n, r in zip(names, per_run)]
        base = {"sample_id": sid, "task": task, "prompt": prompt, "labels": {}, "reference": refs}
        if mode == "pairwise":
            for x, y in itertools.combinations(answers_, 2):
                items.append({**base, "key": f"{sid}|{x['model']}|{y['model']}", "answers": [x, y]})
        elif mode == "likert":
            items.extend({**base, "key": f"{sid}|{a['model']}", "answers": [a]} for a in answers_)
        else:
            items.append({**base, "key": sid, "answers": answers_})
    origin = {"sources": [str(Path(p).resolve()) for p in paths], "task": task, "models": names}
    return items, origin


def _common_task(paths: list[str], logs: list[Any]) -> str:
    sets = [set(log.tasks) or {r.task for r in log.records} for log in logs]
    common = set.intersection(*sets)
    if len(common) == 1:
        return common.pop()
    listing = "; ".join(f"{p}: {', '.join(sorted(s)) or 'none'}" for p, s in zip(paths, sets))
    if not common:
        raise UsageError(f"the runs are of different tasks ({listing}): annotate runs of one task")
    raise UsageError(f"the runs hold several tasks ({', '.join(sorted(common))}): pass --task NAME")


def from_file(path: str, mode: str, prompt_field: str = "prompt", answer_fields: list[str] | None = None,
              id_field: str = "id", label_fields: list[str] | None = None, model_field: str | None = None,
              limit: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Items from JSONL or CSV rows: a prompt (or a list of turns), one or more answers, optional labels.

    JSONL rows may give `answers` as a list of strings or of {"model", "text"|"turns"}; CSV rows give
    one column per answer (`--answer-columns`). Labels (`--label-columns`) are kept on the item.
    """
    p = Path(path)
    rows = _read_rows(p)
    answer_fields = answer_fields or []
    items = []
    for n, row in enumerate(rows[:limit] if limit else rows, 1):
        where = f"{p}:{n + (1 if p.suffix.lower() == '.csv' else 0)}"
        prompt = row.get(prompt_field)
        if isinstance(prompt, str):
            prompt = [prompt]
        if not isinstance(prompt, list) or not prompt or not all(isinstance(t, str) for t in prompt):
            raise DataError(f"{where}: no '{prompt_field}' text (pass --prompt-field NAME)")
        answers_ = _answers(row, answer_fields, model_field, where)
        if mode == "pairwise" and len(answers_) != 2:
            raise DataError(f"{where}: pairwise items need exactly two answers, found {len(answers_)}")
        if mode == "ranking" and len(answers_) < 2:
            raise DataError(f"{where}: ranking items need two or more answers, found {len(answers_)}")
        labels = {f: str(row[f]) for f in label_fields or [] if row.get(f) not in (None, "")}
        sid = str(row.get(id_field) if row.get(id_field) not in (None, "") else n)
        base = {"sample_id": sid, "task": p.stem, "prompt": prompt, "labels": labels, "reference": None}
        if mode == "likert":
            items.extend({**base, "key": sid if len(answers_) == 1 else f"{sid}|{a['model']}", "answers": [a]}
                         for a in answers_)
        else:
            items.append({**base, "key": sid, "answers": answers_})
    if not items:
        raise DataError(f"{p} holds no items")
    models = sorted({a["model"] for it in items for a in it["answers"]})
    return items, {"sources": [str(p.resolve())], "task": p.stem, "models": models}


def from_files(paths: list[str], mode: str, **kwargs: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Items from several files (e.g. one CSV per model); with more than one file, ids get the file's name."""
    if len(paths) == 1:
        return from_file(paths[0], mode, **kwargs)
    items: list[dict[str, Any]] = []
    origin: dict[str, Any] = {"sources": [], "task": Path(paths[0]).parent.name or "items", "models": []}
    for path in paths:
        its, o = from_file(path, mode, **kwargs)
        stem = Path(path).stem
        for it in its:
            if not kwargs.get("model_field"):  # answers are named after their file, not after a column
                it["answers"] = [{**a, "model": stem if len(it["answers"]) == 1 else f"{stem}:{a['model']}"}
                                 for a in it["answers"]]
            items.append({**it, "key": f"{stem}|{it['key']}", "sample_id": f"{stem}|{it['sample_id']}"})
        origin["sources"] += o["sources"]
    origin["models"] = sorted({a["model"] for it in items for a in it["answers"]})
    return items, origin


def _answers(row: dict[str, Any], fields: list[str], model_field: str | None, where: str) -> list[dict[str, Any]]:
    if fields:
        missing = [f for f in fields if not isinstance(row.get(f), str)]
        if missing:
            raise DataError(f"{where}: no answer text in {', '.join(missing)} (check --answer-fields)")
        name = str(row[model_field]) if model_field and row.get(model_field) else None
        return [{"model": name if name and len(fields) == 1 else f, "turns": [row[f]]} for f in fields]
    raw = row.get("answers", row.get("answer", row.get("output")))
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{where}: no answers (give 'answers': [...], 'answer' or 'output', or --answer-fields)")
    out = []
    for i, a in enumerate(raw):
        if isinstance(a, str):
            named = model_field and len(raw) == 1 and row.get(model_field)
            out.append({"model": str(row[model_field]) if named else f"answer_{i + 1}", "turns": [a]})
        elif isinstance(a, dict) and isinstance(a.get("turns", a.get("text")), (str, list)):
            turns = a.get("turns", a.get("text"))
            out.append({"model": str(a.get("model") or f"answer_{i + 1}"),
                        "turns": [turns] if isinstance(turns, str) else [str(t) for t in turns]})
        else:
            raise DataError(f"{where}: answer {i + 1} is neither text nor {{'model', 'text' or 'turns'}}")
    return out


def _read_rows(p: Path) -> list[dict[str, Any]]:
    if not p.is_file():
        raise UsageError(f"items file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{p} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if p.suffix.lower() == ".csv":
        return list(csv.DictReader(io.StringIO(text, newline="")))
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}:{n}: not JSON ({exc.msg}); items files are JSONL (one object a line) or CSV") from None
        if not isinstance(row, dict):
            raise DataError(f"{p}:{n}: expected a JSON object")
        rows.append(row)
    return rows
