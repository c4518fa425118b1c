"""HellaSwag (validation, 10,042 items): pick the ending of a situation by log-likelihood.

Prompt and metrics are lm-eval's `hellaswag` (0-shot): context = preprocess(activity_label + ": " +
ctx_a + " " + ctx_b.capitalize()), one continuation " {ending}" per preprocessed ending; `acc`,
`acc_norm` (log-likelihood / characters of the ending, lm-eval's headline number) and `acc_bytes`,
scored by the shared multiple-choice helper (`tasks/multiple_choice.py`).
lm-eval's `preprocess`: strip, " [title]" -> ". ", delete every "[...]" tag, "  " -> " ".

Data, two sources:
- `<data-dir>/hellaswag/hellaswag_val_full.txt.bz2` (shared/data; llama.cpp's text form), 6 lines
  per item: "<activity_label>: <ctx>", the gold index 0-3, then the 4 endings. Its extractor already
  removed the WikiHow tags (much like lm-eval), but `ctx_a` and `ctx_b` are joined and `ctx_b` is
  not capitalised. We rebuild lm-eval's text from it: lm-eval's `preprocess` is applied again (it
  is idempotent on clean text and collapses leftover double spaces), and the fragment after the
  last sentence end ("he" in "A man is sitting on a roof. he") gets its first letter upper-cased,
  which is what `ctx_b.capitalize()` does to ActivityNet items. Not reproduced: `capitalize()` also
  lower-cases the rest of `ctx_b` (it rarely holds capitals), and a `ctx_a` that does not end a
  sentence leaves `ctx_b` unrecoverable (then the text is kept as is).
- The hub dataset `Rowan/hellaswag` (`ctx_a`, `ctx_b`, `endings`, `label`), when no data dir is
  given: lm-eval's exact preprocessing.
"""

from __future__ import annotations

import bz2
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from evalsuite.tasks.multiple_choice import MultipleChoiceTask, mc_sample

from evalsuite.data import load_hub
from evalsuite.errors import DataError
from evalsuite.records import Sample
from evalsuite.task import TaskContext

FILE = "hellaswag_val_full.txt.bz2"
_LAST_FRAGMENT = re.compile(r"^(.*[.!?] )([a-z])")  # greedy: the last sentence end followed by lower case


def preprocess(text: str) -> str:
    """lm-eval's `hellaswag/utils.preprocess`, copied (5 lines) so the native task needs no lm-eval import."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def hub_sample(row: dict[str, Any], index: int) -> Sample:
    """A `Rowan/hellaswag` row as lm-eval's `process_docs` turns it into a prompt."""
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return mc_sample(str(row.get("ind", index)), preprocess(row["activity_label"] + ": " + ctx),
                     [preprocess(e) for e in row["endings"]], int(row["label"]), activity_label=row["activity_label"])


def text_sample(lines: list[str], index: int) -> Sample:
    """Six lines of the text form (see the module docstring for how lm-eval's text is rebuilt)."""
    head, label, *endings = (line.rstrip("\n") for line in lines)
    query = _LAST_FRAGMENT.sub(lambda m: m.group(1) + m.group(2).upper(), preprocess(head))
    return mc_sample(str(index), query, [preprocess(e) for e in endings], int(label),
                     activity_label=head.split(": ", 1)[0])


def read_text_form(path: Any) -> list[Sample]:
    try:
        with bz2.open(path, "rt", encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if len(lines) % 6:
        raise DataError(f"{path}: {len(lines)} lines is not a multiple of 6 (expected 6 lines per item)")
    samples = []
    for i in range(0, len(lines), 6):
        label = lines[i + 1].strip()
        if label not in ("0", "1", "2", "3"):
            raise DataError(f"{path}:{i + 2}: an item's second line must be the gold index 0-3, got {label[:40]!r}")
        samples.append(text_sample(lines[i : i + 6], i // 6))
    return samples


@dataclass
class HellaSwag(MultipleChoiceTask):
    """HellaSwag validation (10,042), 0-shot log-likelihood of each ending, acc/acc_norm like lm-eval."""

    hub_path: str = "Rowan/hellaswag"
    name: ClassVar[str] = "hellaswag"
    version: ClassVar[str] = "1"

    def load(self, ctx: TaskContext) -> list[Sample]:
        if ctx.data_dir is None:
            return [hub_sample(r, i) for i, r in enumerate(load_hub(self.hub_path, split="validation"))]
        return read_text_form(ctx.data_path("hellaswag", FILE, hub_hint=self.hub_path))


hellaswag = HellaSwag
