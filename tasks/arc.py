"""ARC-Easy / ARC-Challenge: 0-shot multiple choice scored by the log-likelihood of each answer text.

Prompt and metrics are lm-eval's `arc_easy` / `arc_challenge`: context "Question: {question}\\nAnswer:",
one continuation " {choice}" per option; `acc` = argmax of the summed log-likelihoods, `acc_norm` =
argmax of log-likelihood / len(choice) in characters (lm-eval's `completion_len`, the choice text
without the leading space), `acc_bytes` = the same over UTF-8 bytes (lm-eval's `acc_bytes`).

Data: `<data-dir>/arc/arc_{easy,challenge}_test.jsonl` in MosaicML's form (`query` already starts
with "Question: ", `choices`, 0-based `gold`), or the hub dataset `allenai/ai2_arc` (configs
ARC-Easy / ARC-Challenge, `answerKey` matched against `choices.label`) when no data dir is given.
Requests and scoring are the shared multiple-choice helper's (`tasks/multiple_choice.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from evalsuite.tasks.multiple_choice import MultipleChoiceTask, mc_sample

from evalsuite.data import load_hub, numbered_jsonl, require
from evalsuite.errors import DataError, UsageError
from evalsuite.records import Sample
from evalsuite.task import TaskContext


@dataclass
class ARC(MultipleChoiceTask):
    """ARC test set, 0-shot log-likelihood of each answer, acc/acc_norm like lm-eval."""

    subset: str = "easy"
    hub_path: str = "allenai/ai2_arc"
    version: ClassVar[str] = "1"

    def __post_init__(self) -> None:
        if self.subset not in ("easy", "challenge"):
            raise UsageError(f"ARC subset must be 'easy' or 'challenge', got {self.subset!r}")
        self.name = f"arc_{self.subset}"

    def load(self, ctx: TaskContext) -> list[Sample]:
        if ctx.data_dir is None:
            rows = load_hub(self.hub_path, f"ARC-{self.subset.capitalize()}", split="test")
            return [_hub_sample(r) for r in rows]
        path = ctx.data_path("arc", f"arc_{self.subset}_test.jsonl", hub_hint=self.hub_path)
        samples = []
        for i, (line, r) in enumerate(numbered_jsonl(path)):
            require(r, ("query", "choices", "gold"), path, line)
            if not isinstance(r["gold"], int) or not 0 <= r["gold"] < len(r["choices"]):
                raise DataError(f"{path}:{line}: gold {r['gold']!r} is not an index into its {len(r['choices'])} choices")
            samples.append(mc_sample(str(i), r["query"].strip() + "\nAnswer:", list(r["choices"]), r["gold"]))
        return samples


def _hub_sample(row: dict[str, Any]) -> Sample:
    """A row of allenai/ai2_arc: the prompt lm-eval's `doc_to_text` renders, gold = label index of answerKey."""
    labels = list(row["choices"]["label"])
    return mc_sample(str(row["id"]), f"Question: {row['question']}\nAnswer:", list(row["choices"]["text"]),
                     labels.index(row["answerKey"]))


def arc_easy(hub_path: str = "allenai/ai2_arc") -> ARC:
    """ARC-Easy test (2,376), 0-shot log-likelihood of each answer, acc/acc_norm like lm-eval."""
    return ARC("easy", hub_path=hub_path)


def arc_challenge(hub_path: str = "allenai/ai2_arc") -> ARC:
    """ARC-Challenge test (1,172), 0-shot log-likelihood of each answer, acc/acc_norm like lm-eval."""
    return ARC("challenge", hub_path=hub_path)
