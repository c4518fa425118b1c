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
from collections.abc import Sequence

from evalsuite.data import load_hub, read_jsonl
from evalsuite.records import GenerateRequest, Output, Request, Sample, Score
from evalsuite.registry import task
from evalsuite.task import Task, TaskContext

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


class GSM8K(Task):
    name = "gsm8k"
    version = "3"

    def __init__(self, num_fewshot: int = 5, max_tokens: int = 256, hub_path: str = "openai/gsm8k") -> None:
        self.num_fewshot = num_fewshot
        self.hub_path = hub_path
        self.max_tokens = max_tokens
        self.stop = ["Question:", "</s>", "<|im_end|>"]

    def _split(self, ctx: TaskContext, split: str) -> list[dict]:
        if ctx.data_dir is None:
            return load_hub(self.hub_path, "main", split=split)
        return read_jsonl(ctx.data_path("gsm8k", f"{split}.jsonl", hub_hint="openai/gsm8k"))

    def load(self, ctx: TaskContext) -> list[Sample]:
        shots = self._split(ctx, "train")[: self.num_fewshot] if self.num_fewshot else []
        prefix = "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in shots)
        return [
            Sample(id=str(i), input=f"{prefix}Question: {r['question']}\nAnswer:", target=r["answer"])
            for i, r in enumerate(self._split(ctx, "test"))
        ]

    def requests(self, sample: Sample) -> list[Request]:
        return [GenerateRequest(sample.input, max_tokens=self.max_tokens, stop=tuple(self.stop))]  # type: ignore[arg-type]

    def score(self, sample: Sample, outputs: Sequence[Output]) -> Score:
        text = outputs[0].text
        gold = normalize(str(sample.target))
        strict, flexible = extract_strict(text), extract_flexible(text)
        return Score(
            {"exact_match_strict": float(normalize(strict) == gold), "exact_match_flexible": float(normalize(flexible) == gold)},
            answer={"strict": strict, "flexible": flexible},
            explanation={"gold": gold},
        )


@task("gsm8k", "GSM8K grade-school math, 5-shot generation, strict (#### N) and flexible (last number) match")
def gsm8k(num_fewshot: int = 5, max_tokens: int = 256, hub_path: str = "openai/gsm8k") -> GSM8K:
    return GSM8K(num_fewshot=num_fewshot, max_tokens=max_tokens, hub_path=hub_path)
