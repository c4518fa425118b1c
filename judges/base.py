"""What every judge shares: prompt rendering, k-sample requests, one batched call, the judge log.

A judge turns *items* (a conversation plus which turn to judge) into `GenerateRequest`s for the
judge model and its outputs back into a `Judgment`. All requests of a task go to the judge in one
`client.generate` call (a `runner.ModelClient`: cached, so re-scoring never re-asks the judge).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evalsuite.judges.prompts import DEFAULT_RUBRIC, PromptTemplate, load_template

from evalsuite.records import GenerateRequest, Output

TURN_KEYS = ("question", "answer", "answer_a", "answer_b", "reference")


@dataclass
class JudgeItem:
    """One thing to judge: a conversation's turns and the 1-based turn in focus.

    Each turn is a dict with `question` and, for single grading, `answer`; for pairwise,
    `answer_a`/`answer_b` (the two contestants, A = first). `reference` is optional.
    """

    turns: list[dict[str, Any]]
    focus: int = 0  # 0 means the last turn

    def variables(self, rubric: str) -> dict[str, Any]:
        focus = self.focus or len(self.turns)
        # every key present (None if unset) so templates can test `{% if t.reference %}` under StrictUndefined
        turns = [{k: t.get(k) for k in TURN_KEYS} | t for t in self.turns]
        return {"turns": turns, "focus": focus, "rubric": rubric, **turns[focus - 1]}


@dataclass
class Judgment:
    """A judge's decision on one item. `value` None means a judge error (see `error`)."""

    value: float | None
    error: str | None = None
    log: dict[str, str] = field(default_factory=dict)  # goes into Score.explanation, prefixed
    extra: dict[str, float] = field(default_factory=dict)  # more per-item values (e.g. inconsistent)


class Judge:
    """Base class of the built-in judges (`evalsuite.protocols.Judge`): subclasses set `default_template`
    and `pairwise`, and implement `_prompts` and `_decide`."""

    default_template = "single"
    pairwise: ClassVar[bool] = False  # True: items carry answer_a/answer_b

    def __init__(self, template: str | None = None, rubric: str | None = None, max_tokens: int = 512,
                 temperature: float | None = None, samples: int = 1, seed: int = 0) -> None:
        self.template: PromptTemplate = load_template(template, self.default_template)
        self.rubric = rubric or DEFAULT_RUBRIC
        self.max_tokens, self.seed = max_tokens, seed
        self._temperature_arg = temperature
        self.set_samples(samples)

    def set_samples(self, samples: int) -> None:
        """Take the median of `samples` judgments (also how `--judge-samples k` reaches a task's judges)."""
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            from evalsuite.errors import UsageError

            raise UsageError(f"judge_samples must be a whole number >= 1, got {samples!r}")
        self.samples = samples
        # k > 1 judgments of a greedy judge would all be the same: sample unless told otherwise
        t = self._temperature_arg
        self.temperature = t if t is not None else (0.0 if self.samples == 1 else 0.7)

    # ------------------------------------------------------------------ subclass hooks
    def _prompts(self, item: JudgeItem) -> list[dict[str, Any]]:
        """Template variables for each prompt this item needs (pairwise: both orders)."""
        return [item.variables(self.rubric)]

    def _decide(self, item: JudgeItem, texts: list[list[str | None]]) -> Judgment:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared machinery
    def requests(self, item: JudgeItem) -> list[GenerateRequest]:
        """k requests per prompt; the seed varies so each sample is its own cached call."""
        sampled = self.temperature > 0
        return [GenerateRequest(self.template.render(**v), max_tokens=self.max_tokens, temperature=self.temperature,
                                seed=self.seed + i if sampled else None)
                for v in self._prompts(item) for i in range(self.samples)]

    def judge(self, client: Any, items: Sequence[JudgeItem], label: str = "judge") -> list[Judgment]:
        """Judge every item with one batched (cached) call to the judge model."""
        return run_judges(client, [(self, item) for item in items], label)

    def finish(self, item: JudgeItem, outs: Sequence[Output], header: dict[str, str]) -> Judgment:
        """This item's outputs (in `requests` order) -> its judgment, with the judge log."""
        texts = [o.text if o.error is None else None for o in outs]
        groups = [texts[i: i + self.samples] for i in range(0, len(texts), self.samples)]
        j = self._decide(item, groups)
        errors = [o.error for o in outs if o.error]
        if errors and j.error:
            j.error = f"{j.error}; judge call failed: {errors[0]}"
        j.log = {**header, "cached": f"{sum(bool(o.extra.get('cached')) for o in outs)}/{len(outs)}",
                 "verdicts": json.dumps(texts, ensure_ascii=False), **j.log}
        if j.error:
            j.log["error"] = j.error
        return j

    def log_header(self, client: Any) -> dict[str, str]:
        sampling = {"temperature": self.temperature, "max_tokens": self.max_tokens, "samples": self.samples,
                    "seeds": [self.seed + i for i in range(self.samples)] if self.temperature > 0 else None}
        return {"model": str(client.name), "fingerprint": str(client.fingerprint), "template": self.template.id,
                "template_sha256": self.template.sha256, "sampling": json.dumps(sampling)}

    def describe(self) -> dict[str, Any]:
        """What results.json records about this judge (its numbers depend on all of it)."""
        return {"kind": type(self).__name__, "template": self.template.id, "template_sha256": self.template.sha256,
                "rubric": self.rubric, "max_tokens": self.max_tokens, "temperature": self.temperature, "samples": self.samples,
                "seed": self.seed}


def median_or_none(values: Sequence[float | None]) -> float | None:
    """Median of the parsed values; None when none parsed (a judge error, not a score)."""
    ok = [v for v in values if v is not None]
    return float(statistics.median(ok)) if ok else None


def run_judges(client: Any, jobs: Sequence[tuple[Judge, JudgeItem]], label: str = "judge") -> list[Judgment]:
    """Several judges' items in one batched call: the judge backend sees a single request list."""
    per_job = [judge.requests(item) for judge, item in jobs]
    flat = [r for reqs in per_job for r in reqs]
    outputs: list[Output] = client.generate(flat, label) if flat else []
    headers: dict[int, dict[str, str]] = {}
    judgments, pos = [], 0
    for (judge, item), reqs in zip(jobs, per_job):
        if id(judge) not in headers:
            headers[id(judge)] = judge.log_header(client)
        header = headers[id(judge)]
        judgments.append(judge.finish(item, outputs[pos: pos + len(reqs)], header))
        pos += len(reqs)
    return judgments
