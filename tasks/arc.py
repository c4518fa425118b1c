"""ARC-Easy / ARC-Challenge: 0-shot multiple choice scored by the log-likelihood of each answer text.

Prompt and metrics are lm-eval's `arc_easy` / `arc_challenge`: context "Question: {question}\\nAnswer:",
one continuation " {choice}" per option; `acc` = argmax of the summed log-likelihoods, `acc_norm` =
argmax of log-likelihood / len(choice) in characters (lm-eval's `completion_len`, the choice text
without the leading space), `acc_bytes` = the same over UTF-8 bytes (lm-eval's `acc_bytes`).

Data: `<data-dir>/arc/arc_{easy,challenge}_test.jsonl` in MosaicML's form (`query` already starts
with "Question: ", `choices`, 0-based `gold`), or the hub dataset `allenai/ai2_arc` (configs
ARC-Easy / ARC-Challenge, `answerKey` matched against `choices.label`) when no data dir is given.

`ChoiceTask` is the shared base for log-likelihood multiple-choice tasks (HellaSwag uses it too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from evalsuite.data import load_hub, numbered_jsonl, require
from evalsuite.errors import DataError, UsageError
from evalsuite.records import LoglikelihoodRequest, Output, Request, Sample, Score
from evalsuite.task import Task, TaskContext


def choice_metrics(logprobs: Sequence[float], choices: Sequence[str], gold: int) -> tuple[dict[str, float], int]:
    """lm-eval's multiple_choice metrics: acc, acc_norm (per character), acc_bytes (per UTF-8 byte).

    Ties go to the first choice, as with numpy's argmax.
    """

    def argmax(values: Sequence[float]) -> int:
        return max(range(len(values)), key=lambda i: (values[i], -i))

    pred = argmax(logprobs)
    per_char = [lp / max(len(c), 1) for lp, c in zip(logprobs, choices)]
    per_byte = [lp / max(len(c.encode("utf-8")), 1) for lp, c in zip(logprobs, choices)]
    values = {
        "acc": float(pred == gold),
        "acc_norm": float(argmax(per_char) == gold),
        "acc_bytes": float(argmax(per_byte) == gold),
    }
    return values, pred


class ChoiceTask(Task):
    """Samples carry the context as `input`, the answer texts as `choices` and the gold index as `target`."""

    def requests(self, sample: Sample) -> list[Request]:
        return [LoglikelihoodRequest(str(sample.input), f" {c}") for c in sample.choices or []]

    def score(self, sample: Sample, outputs: Sequence[Output]) -> Score:
        choices = sample.choices or []
        if outputs and outputs[0].logprob is None:  # a text answer (`evalsuite score --outputs`)
            text = outputs[0].text.strip().lower()
            pred = next((i for i, c in enumerate(choices) if text.startswith(c.strip().lower())), None)
            return Score({"acc": float(pred == sample.target)}, answer=pred)
        logprobs = [o.logprob if o.logprob is not None else -math.inf for o in outputs]
        values, pred = choice_metrics(logprobs, choices, int(sample.target))
        return Score(values, answer=pred, explanation={"logprobs": ", ".join(f"{lp:.3f}" for lp in logprobs)})


@dataclass
class ARC(ChoiceTask):
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
            samples.append(Sample(id=str(i), input=r["query"].strip() + "\nAnswer:", target=r["gold"],
                                  choices=list(r["choices"])))
        return samples


def _hub_sample(row: dict[str, Any]) -> Sample:
    """A row of allenai/ai2_arc: the prompt lm-eval's `doc_to_text` renders, gold = label index of answerKey."""
    labels = list(row["choices"]["label"])
    return Sample(
        id=str(row["id"]),
        input=f"Question: {row['question']}\nAnswer:",
        target=labels.index(row["answerKey"]),
        choices=list(row["choices"]["text"]),
    )


def arc_easy(hub_path: str = "allenai/ai2_arc") -> ARC:
    """ARC-Easy test (2,376), 0-shot log-likelihood of each answer, acc/acc_norm like lm-eval."""
    return ARC("easy", hub_path=hub_path)


def arc_challenge(hub_path: str = "allenai/ai2_arc") -> ARC:
    """ARC-Challenge test (1,172), 0-shot log-likelihood of each answer, acc/acc_norm like lm-eval."""
    return ARC("challenge", hub_path=hub_path)
