"""Training mixtures: several sources drawn by weight, with the realised proportions reported.

Weights say what share of the mixture's *rows* each source should be. Targets are allocated by
largest remainder (so they sum exactly to the total); a source with fewer rows than its target is
used whole and, only with `replace=True`, upsampled (repeats are marked in provenance). Without a
total, the mixture is the largest one that needs no upsampling. The report gives the realised row
and length shares, because a source of long answers can dominate training even at a small row share.
Length is counted in whitespace words unless a tokenizer is given; the report's keys name the unit
(`words`/`word_share` or `tokens`/`token_share`), so a word count is never read as a token count.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalsuite.datagen.rows import Row, read_rows, row_text, with_provenance
from evalsuite.errors import UsageError


@dataclass
class Source:
    name: str
    path: str
    weight: float
    rows: list[Row] | None = None  # given directly instead of read from path

    def load(self) -> list[Row]:
        if self.rows is None:
            self.rows = read_rows(self.path)
        return self.rows


def parse_source(text: str) -> Source:
    """`[name=]path[:weight]` from the command line."""
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = "", text
    path, colon, weight = rest.rpartition(":")
    if colon and not _is_number(weight):
        if not Path(rest).exists() and Path(path).exists():  # `file.jsonl:abc`: a weight that is not a number
            raise UsageError(f"bad --source '{text}': the weight '{weight}' is not a number "
                             "(expected [name=]path[:weight], e.g. a=data.jsonl:0.5)")
        path, weight = rest, "1"
    elif not colon:
        path, weight = rest, "1"
    w = float(weight)
    if not path or w <= 0:
        raise UsageError(f"bad --source '{text}': expected [name=]path[:weight] with a positive weight")
    return Source(name or Path(path).stem, path, w)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Largest-remainder split of `total` by weights (sums exactly to total)."""
    s = sum(weights)
    raw = [total * w / s for w in weights]
    counts = [math.floor(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: total - sum(counts)]:
        counts[i] += 1
    return counts


def word_count(text: str) -> int:
    return len(text.split())


def hf_token_counter(spec: str) -> Callable[[str], int]:
    """Token counts with a real tokenizer (an evalsuite model alias, a folder, or a hub id)."""
    from transformers import AutoTokenizer

    try:
        from evalsuite.backends import models

        path = str(models.resolve(spec).path)
    except Exception:  # noqa: BLE001 - not an alias: let transformers resolve it
        path = spec
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:  # a missing folder / unknown hub id: one line, not a traceback
        raise UsageError(f"--tokenizer '{spec}': cannot load a tokenizer from {path} ({type(exc).__name__})") from exc
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


UNITS = ("words", "tokens")


def build_mixture(sources: Sequence[Source], total: int | None = None, seed: int = 0, replace: bool = False,
                  count: Callable[[str], int] = word_count, unit: str = "words") -> tuple[list[Row], dict[str, Any]]:
    """Draw the mixture; returns shuffled rows (provenance: mixture source) and the report.

    `unit` ("words" or "tokens") says what `count` counts and names the report keys.
    """
    if unit not in UNITS:
        raise UsageError(f"mixture length unit must be one of {UNITS}, got '{unit}'")
    share = f"{unit[:-1]}_share"
    if not sources:
        raise UsageError("a mixture needs at least one --source")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise UsageError(f"source names must be unique, got {names} (use name=path:weight)")
    data = [s.load() for s in sources]
    weights = [s.weight for s in sources]
    if total is None:
        total = int(min(len(d) * sum(weights) / w for d, w in zip(data, weights)))
    targets = allocate(total, weights)
    rng = random.Random(seed)
    mixed: list[Row] = []
    report: dict[str, Any] = {"total_target": total, "seed": seed, "unit": unit, "sources": {}}
    for src, rows, target in zip(sources, data, targets):
        picked = _draw(rows, target, rng, replace)
        mixed.extend(with_provenance(r, mixture_source=src.name, mixture_path=src.path, **({"repeat": k} if k else {}))
                     for r, k in picked)
        report["sources"][src.name] = {"path": src.path, "weight": src.weight, "available": len(rows),
                                       "target": target, "taken": len(picked),
                                       "repeats": sum(1 for _, k in picked if k),
                                       unit: sum(count(row_text(r)) for r, _ in picked)}
    rng.shuffle(mixed)
    rows_total = len(mixed) or 1
    length_total = sum(s[unit] for s in report["sources"].values()) or 1
    wsum = sum(weights)
    for src, info in zip(sources, report["sources"].values()):
        info.update(target_share=src.weight / wsum, row_share=info["taken"] / rows_total,
                    **{share: info[unit] / length_total})
    report["rows"] = len(mixed)
    report[unit] = sum(s[unit] for s in report["sources"].values())
    return mixed, report


def _draw(rows: list[Row], target: int, rng: random.Random, replace: bool) -> list[tuple[Row, int]]:
    """(row, repeat number) pairs: without replacement first, then repeats when allowed."""
    if target <= len(rows):
        return [(r, 0) for r in rng.sample(rows, target)]
    picked = [(r, 0) for r in rows]
    if replace and rows:
        picked += [(r, 1) for r in rng.choices(rows, k=target - len(rows))]
    return picked


def report_lines(report: dict[str, Any]) -> list[str]:
    unit = report["unit"]
    share = f"{unit[:-1]}_share"
    note = "" if unit == "tokens" else " (whitespace words: pass --tokenizer MODEL for token counts)"
    lines = [f"mixture: {report['rows']} rows, {report[unit]} {unit}{note}"]
    for name, s in report["sources"].items():
        short = "" if s["taken"] >= s["target"] else f"  (short by {s['target'] - s['taken']}: pass --replace to upsample)"
        lines.append(f"  {name}: {s['taken']} rows ({100 * s['row_share']:.1f}%, target {100 * s['target_share']:.1f}%), "
                     f"{s[unit]} {unit} ({100 * s[share]:.1f}%){short}")
    return lines
