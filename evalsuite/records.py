"""The one record type that flows from task to backend to scorer to report.

A task turns each `Sample` into `Request`s; a backend answers each with an `Output`; the task
scores the outputs into a `Score`; the runner keeps all of it together in a `SampleRecord`, one
line of samples.jsonl. Reports, gates and re-scoring read these records back and never call a
model. Plain dataclasses keep it small, explicit and cheap to import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Union

Message = dict[str, str]  # {"role": "user" | "system" | "assistant", "content": "..."}
Prompt = Union[str, tuple[Message, ...]]  # text prompt, or chat messages (chat template applied)


@dataclass
class Sample:
    """One evaluation item as the task loads it."""

    id: str
    input: Prompt  # text, or chat messages as a tuple (JSON lists become tuples in `from_json`)
    target: Any = None
    choices: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerateRequest:
    """Sample text from a prompt. `n` > 1 draws several samples (pass@k); `seed` makes them repeatable."""

    prompt: Prompt
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    kind: Literal["generate"] = "generate"


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """log P(continuation | context), summed over the continuation's tokens.

    Same semantics as lm-eval's `loglikelihood`: trailing whitespace of the context moves to the
    continuation before tokenising, and the continuation's tokens are those of
    tokenize(context + continuation) after the context's tokens.
    """

    context: str
    continuation: str
    kind: Literal["loglikelihood"] = "loglikelihood"


Request = Union[GenerateRequest, LoglikelihoodRequest]


@dataclass
class Output:
    """A backend's answer to one request. `error` set means no answer: never scored as wrong."""

    texts: list[str] | None = None  # generate: one text per sample (n)
    logprob: float | None = None  # loglikelihood
    is_greedy: bool | None = None  # loglikelihood: continuation is the argmax path
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


@dataclass
class Score:
    """What a task says of one sample: metric values, the extracted answer, and why."""

    values: dict[str, float | None]
    answer: Any = None
    explanation: dict[str, str] = field(default_factory=dict)


@dataclass
class SampleRecord:
    """One line of samples.jsonl: everything known about one sample after a run."""

    task: str
    sample: Sample
    requests: list[Request]
    outputs: list[Output]
    score: Score | None = None
    error: str | None = None  # a request failed for good: the sample is excluded from metrics

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "id": self.sample.id,
            "input": prompt_to_json(self.sample.input),
            "target": self.sample.target,
            "choices": self.sample.choices,
            "metadata": self.sample.metadata,
            "requests": [request_to_json(r) for r in self.requests],
            "outputs": [dataclasses.asdict(o) for o in self.outputs],
            "answer": self.score.answer if self.score else None,
            "scores": self.score.values if self.score else {},
            "explanation": self.score.explanation if self.score else {},
            "error": self.error,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SampleRecord:
        sample = Sample(d["id"], as_prompt(d["input"]), d.get("target"), d.get("choices"), d.get("metadata") or {})
        score = Score(d.get("scores") or {}, d.get("answer"), d.get("explanation") or {})
        return cls(
            task=d["task"],
            sample=sample,
            requests=[request_from_json(r) for r in d.get("requests", [])],
            outputs=[Output(**o) for o in d.get("outputs", [])],
            score=score,
            error=d.get("error"),
        )


def as_prompt(value: Any) -> Prompt:
    """A prompt read from JSON (a chat is a list there) as the one in-memory form: str or tuple of messages."""
    if isinstance(value, str):
        return value
    return tuple(dict(m) for m in value)


def prompt_to_json(prompt: Prompt) -> str | list[Message]:
    return prompt if isinstance(prompt, str) else [dict(m) for m in prompt]


def request_to_json(r: Request) -> dict[str, Any]:
    d = dataclasses.asdict(r)
    if isinstance(r, GenerateRequest):
        d["prompt"] = prompt_to_json(r.prompt)
    return d


def request_from_json(d: dict[str, Any]) -> Request:
    d = dict(d)
    kind = d.pop("kind")
    if kind == "loglikelihood":
        return LoglikelihoodRequest(**d)
    prompt = as_prompt(d.pop("prompt"))
    d["stop"] = tuple(d.get("stop", ()))
    return GenerateRequest(prompt=prompt, **d)


def request_key(r: Request, fingerprint: str) -> str:
    """Cache key: model fingerprint + request kind + full prompt + every generation parameter.

    Nothing about batching or devices goes in, so the same call hits the cache whatever the
    batch size or number of GPUs.
    """
    blob = json.dumps({"model": fingerprint, **request_to_json(r)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def chat(user: str, system: str | None = None) -> tuple[Message, ...]:
    """A one-turn chat prompt."""
    msgs: list[Message] = [{"role": "system", "content": system}] if system else []
    return tuple(msgs + [{"role": "user", "content": user}])


def finish_reasons(req: GenerateRequest, out: Output) -> list[str]:
    """Why each generated text ended: "stop" (end of turn or a stop sequence) or "length" (max_tokens), as the
    backend reports it; derived from the token count where it does not (every sample used its whole budget)."""
    given = out.extra.get("finish_reason")
    if isinstance(given, list) and len(given) == len(out.texts or []):
        reasons = ["length" if g == "length" else "stop" for g in given]
    else:
        per_text = out.tokens_out / max(1, len(out.texts or []))
        reasons = ["length" if per_text >= req.max_tokens else "stop"] * len(out.texts or [])
    out.extra["finish_reason"] = reasons
    return reasons
