"""MMLU: 57 subjects, 4-way multiple choice scored by log-likelihood of the answer letter.

Prompts are lm-eval's `mmlu` template (description line, "Question\nA. ..\nAnswer:", continuation
" A".." D"), few-shot from the dev split with its `first_n` sampler, so the numbers compare with
`lm_eval --tasks mmlu --num_fewshot 5`. Metrics: acc overall (micro: every question weighs the
same, lm-eval's weighting by size), acc_macro (mean of subject accuracies) and acc per subject.
Scoring is the shared multiple-choice helper's (`tasks/multiple_choice.py`) with the letters as the
choices, so each answer letter is one single-token request on one shared context.

Data: `<data-dir>/mmlu/{dev,test}/<subject>_{dev,test}.csv` (header `question,choice0..3,answer`,
answer 0-3), or the hub dataset `cais/mmlu` when no data dir is given.
`--limit N` takes N questions spread round-robin over the subjects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from evalsuite.tasks.multiple_choice import MultipleChoiceTask

from evalsuite import stats
from evalsuite.data import load_hub, numbered_csv, require
from evalsuite.errors import DataError
from evalsuite.records import Sample, SampleRecord
from evalsuite.task import TaskContext

LETTERS = ("A", "B", "C", "D")


def format_question(question: str, choices: Sequence[str]) -> str:
    lines = [question.strip()] + [f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices)]
    return "\n".join(lines) + "\nAnswer:"


@dataclass
class MMLU(MultipleChoiceTask):
    """MMLU (57 subjects), 5-shot, log-likelihood of the answer letter, like lm-eval's mmlu."""

    num_fewshot: int = 5
    subjects: str | None = None  # "anatomy+astronomy" ('+' since ',' separates task arguments)
    hub_path: str = "cais/mmlu"
    name: ClassVar[str] = "mmlu"
    version: ClassVar[str] = "1"
    group_by: ClassVar[str | None] = "subject"
    metrics: ClassVar[tuple[str, ...]] = ("acc",)  # lm-eval's mmlu reports acc (one-letter choices: acc_norm = acc)

    def _rows(self, ctx: TaskContext, split: str) -> dict[str, list[dict[str, Any]]]:
        """subject -> rows of {question, choices, answer}."""
        wanted = set(self.subjects.split("+")) if self.subjects else None
        out: dict[str, list[dict[str, Any]]] = {}
        if ctx.data_dir is None:
            for row in load_hub(self.hub_path, "all", split=split):
                out.setdefault(row["subject"], []).append(row)
        else:
            folder = ctx.data_path("mmlu", split, hub_hint="cais/mmlu")
            for path in sorted(folder.glob(f"*_{split}.csv")):
                subject = path.name[: -len(f"_{split}.csv")]
                out[subject] = [_row(r, path, line) for line, r in numbered_csv(path)]
        return {s: rows for s, rows in sorted(out.items()) if wanted is None or s in wanted}

    def load(self, ctx: TaskContext) -> list[Sample]:
        tests = self._rows(ctx, "test")
        devs = self._rows(ctx, "dev") if self.num_fewshot else {}
        per_subject: list[list[Sample]] = []
        for subject, rows in tests.items():
            topic = subject.replace("_", " ")
            shots = "".join(
                f"{format_question(r['question'], r['choices'])} {LETTERS[r['answer']]}\n\n"
                for r in devs.get(subject, [])[: self.num_fewshot]
            )
            prefix = f"The following are multiple choice questions (with answers) about {topic}.\n\n{shots}"
            per_subject.append([
                Sample(
                    id=f"{subject}/{i}",
                    input=prefix + format_question(r["question"], r["choices"]),
                    target=LETTERS[r["answer"]],
                    choices=list(LETTERS),
                    metadata={"subject": subject},
                )
                for i, r in enumerate(rows)
            ])
        # round-robin over subjects, so that --limit N samples N subjects rather than one
        longest = max((len(s) for s in per_subject), default=0)
        return [subj[i] for i in range(longest) for subj in per_subject if i < len(subj)]

    def parse_text(self, text: str, choices: Sequence[str]) -> int | None:
        """A text answer (`evalsuite score`) names its letter anywhere: "The answer is B."."""
        match = re.search(r"\b([ABCD])\b", text.strip())
        return LETTERS.index(match.group(1)) if match else None

    def aggregate(self, records: Sequence[SampleRecord]) -> dict[str, Any]:
        out = super().aggregate(records)
        subject_accs = [g["acc"]["value"] for g in out.get("groups", {}).values() if "acc" in g]
        if subject_accs:
            mean, se = stats.mean_stderr(subject_accs)
            out["metrics"]["acc_macro"] = {"value": mean, "stderr": se, "n": len(subject_accs)}
        return out


def _row(r: dict[str, str], path: Path, line: int) -> dict[str, Any]:
    """One CSV record as {question, choices, answer}; a missing field or an answer outside 0-3 names the line."""
    require(r, ("question", "choice0", "choice1", "choice2", "choice3", "answer"), path, line)
    answer = r["answer"].strip()
    if answer not in ("0", "1", "2", "3"):
        raise DataError(f"{path}:{line}: answer {answer!r} is not 0-3 (shared/data's MMLU numbers the choices "
                        "0-3, not A-D); fix the line")
    return {"question": r["question"], "choices": [r[f"choice{i}"] for i in range(4)], "answer": int(answer)}


mmlu = MMLU
