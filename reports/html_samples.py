"""Every sample of every run, paired by (task, id), as plain data for the HTML report's sample table.

The page renders these rows client-side from one embedded JSON blob (so thousands of samples stay
fast); everything here is data, never markup, so the browser only ever inserts it as text. Word
diffs are computed here (difflib) as [op, text] pieces: "=" shared, "-" only in the baseline, "+"
only in the run.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from typing import TYPE_CHECKING, Any

from evalsuite.records import GenerateRequest, SampleRecord

if TYPE_CHECKING:
    from evalsuite.rundir import RunLog

MAX_TEXT = 4000  # characters of one prompt/output kept
MAX_DIFF = 2500  # characters above which a diff is not computed (the outputs are shown side by side anyway)
_WORDS = re.compile(r"^\s+|\S+\s*")  # a word with the whitespace after it: diffs stay word-sized


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + f" … [{len(text) - limit} more characters]"


def text_of(value: Any) -> str:
    """A prompt or target as text: chat messages as `[role] content` paragraphs; nothing for None."""
    if value is None:
        return ""
    if isinstance(value, list) and value and isinstance(value[0], dict) and "content" in value[0]:
        return "\n\n".join(f"[{m.get('role')}] {m.get('content')}" for m in value)
    return value if isinstance(value, str) else readable(value)


def readable(value: Any) -> str:
    """A value as a person reads it: no quotes, brackets or True/False of a Python repr."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(readable(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {readable(v)}" for k, v in value.items())
    return str(value)


def lines_of(mapping: dict[str, Any] | None) -> list[list[str]]:
    """A dict as [key, value] lines; a nested dict (e.g. an answer) one line per key."""
    return [[str(k), readable(v)] for k, v in (mapping or {}).items()]


def answer_lines(answer: Any) -> list[list[str]]:
    if answer is None or answer == "" or answer == {}:
        return []
    if isinstance(answer, dict):
        return lines_of(answer)
    return [["answer", readable(answer)]]


def output_text(record: SampleRecord) -> str:
    """Every turn's text (multi-turn tasks have several outputs)."""
    return "\n\n---\n\n".join(o.text for o in record.outputs if o.texts)


def truncated(record: SampleRecord) -> bool:
    """An output cut off by the token limit: finish_reason "length", or as many tokens as the request allowed."""
    for i, out in enumerate(record.outputs):
        if out.extra.get("finish_reason") == "length":
            return True
        req = record.requests[i] if i < len(record.requests) else None
        if isinstance(req, GenerateRequest) and out.tokens_out and out.tokens_out >= req.max_tokens:
            return True
    return False


def word_diff(a: str, b: str) -> list[list[str]] | None:
    """b against a, word by word (whitespace kept); None when identical or too long to diff quickly."""
    if a == b or len(a) + len(b) > 2 * MAX_DIFF:
        return None
    wa, wb = _WORDS.findall(a), _WORDS.findall(b)
    pieces: list[list[str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        old, new = "".join(wa[i1:i2]), "".join(wb[j1:j2])
        if op == "equal":
            _add(pieces, "=", old)
            continue
        tail = old[len(old.rstrip()):] if op == "replace" and old[len(old.rstrip()):] == new[len(new.rstrip()):] else ""
        _add(pieces, "-", old[:len(old) - len(tail)])
        _add(pieces, "+", new[:len(new) - len(tail)])
        _add(pieces, "=", tail)  # the shared space after a replaced word is not part of the change
    return pieces


def _add(pieces: list[list[str]], op: str, text: str) -> None:
    if not text:
        return
    if pieces and pieces[-1][0] == op:
        pieces[-1][1] += text
    else:
        pieces.append([op, text])


def _numbers(record: SampleRecord | None) -> dict[str, float]:
    if record is None or record.score is None or record.error:
        return {}
    return {k: float(v) for k, v in record.score.values.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))}


def _direction(base: dict[str, float], other: dict[str, float], binary: set[str]) -> str:
    """"lost" / "gained" on the first 0/1 metric that flipped, "changed" when another score moved, else ""."""
    for m in base:
        if m in binary and m in other and base[m] != other[m]:
            return "lost" if base[m] > other[m] else "gained"
    return "changed" if any(m in other and base[m] != other[m] for m in base) else ""


def _binary_metrics(records: list[SampleRecord]) -> set[str]:
    seen: dict[str, bool] = {}
    for r in records:
        for k, v in _numbers(r).items():
            seen[k] = seen.get(k, True) and v in (0.0, 1.0)
    return {k for k, ok in seen.items() if ok}


def _cell(record: SampleRecord | None, base_text: str | None) -> dict[str, Any]:
    if record is None:
        return {"missing": True}
    text = clip(output_text(record))
    score = record.score
    cached = any(o.extra.get("cached") for o in record.outputs)
    return {"output": text, "diff": word_diff(base_text, text) if base_text is not None else None,
            "error": record.error or "", "truncated": truncated(record), "cached": cached,
            "scores": lines_of(score.values) if score else [], "explanation": lines_of(score.explanation) if score else [],
            "answer": answer_lines(score.answer) if score else [],
            "tokens": sum(o.tokens_out for o in record.outputs)}


def sample_rows(runs: list[RunLog], tasks: list[str]) -> list[dict[str, Any]]:
    """One row per (task, sample id) of any run: prompt, target, one cell per run, and filter flags."""
    rows = []
    for task in tasks:
        per_run = [{r.sample.id: r for r in run.records_for(task)} for run in runs]
        binary = _binary_metrics([r for recs in per_run for r in recs.values()])
        ids = list(dict.fromkeys(sid for recs in per_run for sid in recs))
        for sid in ids:
            recs = [recs.get(sid) for recs in per_run]
            first = next(r for r in recs if r is not None)
            base = recs[0]
            base_text = clip(output_text(base)) if base is not None and len(runs) > 1 else None
            cells = [_cell(r, base_text if i else None) for i, r in enumerate(recs)]
            directions = [_direction(_numbers(base), _numbers(r), binary) if i and r is not None and base is not None
                          else "" for i, r in enumerate(recs)]
            for cell, d in zip(cells, directions):
                cell["change"] = d
            rows.append({"task": task, "id": sid, "prompt": clip(text_of(first.sample.input)),
                         "target": clip(text_of(first.sample.target)), "cells": cells,
                         "changed": any(directions), "error": any(c.get("error") for c in cells),
                         "truncated": any(c.get("truncated") for c in cells)})
    return rows


def blob(data: Any) -> str:
    """JSON safe inside <script type="application/json">: no `</script>` or `<!--` can end it early."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
