"""GSM8K: grade-school math word problems, greedy generation, answer extraction, exact match.

Matches lm-eval's default `gsm8k` (v3): 5-shot "Question: ...\nAnswer: <worked solution>" with
the first five train problems (`first_n`), stop at "Question:", and two extractions:
- strict: the number after "#### " (the format the exemplars teach);
- flexible: the last number in the output.
Both are compared after lm-eval's normalisation (drop ",", "$", a trailing "." and everything up
to "#### " in the target; case-insensitive).
Data: `<data-dir>/gsm8k/{train,test}.jsonl` or the hub dataset `openai/gsm8k` (config `main`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from evalsuite.data import load_hub, numbered_jsonl, require
from evalsuite.records import GenerateRequest, Output, Request, Sample, Score
from evalsuite.task import Task, TaskContext, sampling_temperature

STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORE = [re.compile(p) for p in (",", r"\$", r"(?s).*#### ", r"\.$")]
INVALID = "[invalid]"


def normalize(text: str) -> str:
    for pattern in IGNORE:
        text = pattern.sub("", text)
    return text.strip().lower()


def extract_strict(text: str) -> str:
    match = STRICT.search(text)
    return match.group(1) if match else INVALID


def extract_flexible(text: str) -> str:
    matches = FLEXIBLE.findall(text)
    if not matches:
        return INVALID
    last = matches[-1]  # lm-eval: group_select -1, then the non-empty group of that match
    return next((g for g in last if g), INVALID)


def majority(answers: Sequence[str]) -> str:
    """The most common answer; ties go to the one seen first (lm-eval's `majority_vote` filter)."""
    return Counter(answers).most_common(1)[0][0] if answers else INVALID


@dataclass
class GSM8K(Task):
    """GSM8K grade-school math, 5-shot generation, strict (#### N) and flexible (last number) match.

    `samples_per_task=k` (or `--samples-per-task k`) samples k answers per problem and scores the
    majority answer of each extraction (self-consistency, maj@k; lm-eval's
    `gsm8k-cot-self-consistency`); the temperature is then 0.2 unless given.
    """

    num_fewshot: int = 5
    max_tokens: int = 256
    hub_path: str = "openai/gsm8k"
    samples_per_task: int = 1
    temperature: float | None = None  # None: greedy for one sample, 0.2 for several
    seed: int | None = None
    name: ClassVar[str] = "gsm8k"
    version: ClassVar[str] = "3"
    stop: ClassVar[tuple[str, ...]] = ("Question:", "</s>", "<|im_end|>")

    def __post_init__(self) -> None:
        self.temperature = sampling_temperature(self.name, self.samples_per_task, self.temperature, 0.2)
        if self.temperature == 0:
            self.seed = None  # greedy: no seed is used, none is recorded

    def _split(self, ctx: TaskContext, split: str) -> list[dict[str, Any]]:
        if ctx.data_dir is None:
            return load_hub(self.hub_path, "main", split=split)
        path = ctx.data_path("gsm8k", f"{split}.jsonl", hub_hint="openai/gsm8k")
        rows = numbered_jsonl(path)
        for line, row in rows:
            require(row, ("question", "answer"), path, line)
        return [row for _, row in rows]

    def load(self, ctx: TaskContext) -> list[Sample]:
        shots = self._split(ctx, "train")[: self.num_fewshot] if self.num_fewshot else []
        prefix = "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in shots)
        return [
            Sample(id=str(i), input=f"{prefix}Question: {r['question']}\nAnswer:", target=r["answer"])
            for i, r in enumerate(self._split(ctx, "test"))
        ]

    def requests(self, sample: Sample) -> list[Request]:
        return [GenerateRequest(sample.input, max_tokens=self.max_tokens, stop=self.stop, n=self.samples_per_task,
                                temperature=float(self.temperature or 0.0), seed=self.seed)]

    def score(self, sample: Sample, outputs: Sequence[Output]) -> Score:
        texts = [t for o in outputs for t in (o.texts or [])] or [""]
        gold = normalize(str(sample.target))
        stricts, flexibles = [extract_strict(t) for t in texts], [extract_flexible(t) for t in texts]
        strict = majority([normalize(a) for a in stricts])
        flexible = majority([normalize(a) for a in flexibles])
        answer: dict[str, Any] = {"strict": stricts[0], "flexible": flexibles[0]}
        if len(texts) > 1:
            answer = {"strict": strict, "flexible": flexible, "votes_strict": dict(Counter(stricts)),
                      "votes_flexible": dict(Counter(flexibles))}
        return Score(
            {"exact_match_strict": float(strict == gold), "exact_match_flexible": float(flexible == gold)},
            answer=answer,
            explanation={"gold": gold} | ({"vote": f"majority of {len(texts)} samples"} if len(texts) > 1 else {}),
        )

    def config(self) -> dict[str, Any]:
        return super().config() | {"stop": list(self.stop)}


gsm8k = GSM8K
