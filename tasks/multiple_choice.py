"""Log-likelihood multiple choice, as lm-eval's `output_type: multiple_choice` scores it.

A sample carries the prompt as `input`, the answer texts as `choices` and the gold as `target`: the
0-based gold index, or the gold choice's own text (MMLU's letters, "C"); the recorded answer takes
the same form. Each choice is one `LoglikelihoodRequest(context, delimiter + choice)` (lm-eval's
`target_delimiter`, a space by default), and the metrics are lm-eval's:

- `acc`: the choice with the highest summed log-likelihood is the gold one;
- `acc_norm`: the same after dividing each log-likelihood by the choice's length in characters
  (lm-eval's `completion_len`: the choice text without the delimiter);
- `acc_bytes`: the same per UTF-8 byte.

Ties go to the first choice, as with numpy's argmax. A text answer (`evalsuite score --outputs`)
is matched to the first choice it starts with (`parse_text`; MMLU reads a letter instead) and
scored for `acc` only. Continuations are `delimiter + choice`, so one-token choices (" A") stay
one-token requests, which the backends read from one next-token distribution per context.

Example, a complete plugin task::

    from evalsuite.tasks.multiple_choice import MultipleChoiceTask, mc_sample

    class Capitals(MultipleChoiceTask):
        name = "capitals"

        def load(self, ctx):
            return [mc_sample("fr", "Q: What is the capital of France?\\nA:", ["Paris", "Lyon"], gold=0)]

    def capitals() -> Capitals:
        \"\"\"Capitals: two-way multiple choice.\"\"\"
        return Capitals()

    # pyproject.toml: [project.entry-points."evalsuite.tasks"]  capitals = "my_pkg.tasks:capitals"

Set `metrics` to the subset to report (e.g. `("acc",)` for TruthfulQA MC1 and MMLU, whose lm-eval
tasks report only `acc`); override `score` for other metrics of the same requests (TruthfulQA MC2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evalsuite.records import LoglikelihoodRequest, Output, Request, Sample, Score
from evalsuite.task import Task

METRICS = ("acc", "acc_norm", "acc_bytes")


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on ties (numpy's argmax)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def choice_metrics(logprobs: Sequence[float], choices: Sequence[str], gold: int) -> tuple[dict[str, float], int]:
    """lm-eval's `acc`, `acc_norm` (per character) and `acc_bytes` (per UTF-8 byte), and the `acc` prediction."""
    if len(logprobs) != len(choices) or not choices:
        raise ValueError(f"{len(logprobs)} log-likelihoods for {len(choices)} choices")
    pred = argmax(logprobs)
    per_char = [lp / max(len(c), 1) for lp, c in zip(logprobs, choices)]
    per_byte = [lp / max(len(c.encode("utf-8")), 1) for lp, c in zip(logprobs, choices)]
    return {"acc": float(pred == gold), "acc_norm": float(argmax(per_char) == gold),
            "acc_bytes": float(argmax(per_byte) == gold)}, pred


def true_probability_mass(logprobs: Sequence[float], labels: Sequence[int]) -> float:
    """The share of the choices' (renormalised) probability on the true ones (TruthfulQA MC2's metric).

    Computed as lm-eval does it, `exp(ll) / sum(exp(ll))`, but shifted by the largest log-likelihood
    first so that long answers (ll of -100s) do not underflow to 0/0.
    """
    top = max(logprobs)
    if top == -math.inf:
        return 0.0
    probs = [math.exp(lp - top) for lp in logprobs]
    return sum(p for p, label in zip(probs, labels) if label) / sum(probs)


def mc_sample(id: str, context: str, choices: Sequence[str], gold: int, **metadata: Any) -> Sample:
    """A multiple-choice sample: context, answer texts, 0-based gold index; keyword args go to metadata."""
    if not 0 <= gold < len(choices):
        raise ValueError(f"sample {id}: gold index {gold} is not one of the {len(choices)} choices")
    return Sample(id=str(id), input=context, target=int(gold), choices=list(choices), metadata=dict(metadata))


def gold_index(sample: Sample) -> int:
    """The gold choice's index: `target` is the index itself, or the text of the gold choice."""
    choices = sample.choices or []
    if isinstance(sample.target, str) and sample.target in choices:
        return choices.index(sample.target)
    return int(sample.target)  # type: ignore[arg-type]


def text_choice(text: str, choices: Sequence[str]) -> int | None:
    """The choice a free-text answer names: the first whose text it starts with (case-insensitive)."""
    t = text.strip().lower()
    return next((i for i, c in enumerate(choices) if c.strip() and t.startswith(c.strip().lower())), None)


class MultipleChoiceTask(Task):
    """Base class: subclasses implement `load` (samples from `mc_sample`); requests and scoring are done."""

    delimiter: str = " "  # lm-eval's target_delimiter, between the context and each choice
    metrics: tuple[str, ...] = METRICS

    def requests(self, sample: Sample) -> list[Request]:
        return [LoglikelihoodRequest(str(sample.input), f"{self.delimiter}{c}") for c in sample.choices or []]

    @staticmethod
    def logprobs(outputs: Sequence[Output]) -> list[float]:
        """One log-likelihood per choice; a missing one counts as impossible."""
        return [o.logprob if o.logprob is not None else -math.inf for o in outputs]

    def parse_text(self, text: str, choices: Sequence[str]) -> int | None:
        """The choice a text answer names (default: `text_choice`); None when it names none."""
        return text_choice(text, choices)

    def score(self, sample: Sample, outputs: Sequence[Output]) -> Score:
        choices = sample.choices or []
        gold = gold_index(sample)
        if outputs and outputs[0].logprob is None:  # a text answer
            pred = self.parse_text(outputs[0].text, choices)
            return Score({"acc": float(pred == gold)}, answer=_answer(sample, pred))
        lps = self.logprobs(outputs)
        values, pred = choice_metrics(lps, choices, gold)
        return Score({k: values[k] for k in self.metrics}, answer=_answer(sample, pred),
                     explanation={"logprobs": ", ".join(f"{lp:.4f}" for lp in lps)})


def _answer(sample: Sample, pred: int | None) -> int | str | None:
    """The prediction in the form of the sample's target: an index, or the choice's text."""
    if pred is None or not isinstance(sample.target, str):
        return pred
    return (sample.choices or [])[pred]
