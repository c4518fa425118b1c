"""Single-answer grading (1-10) and its reference-guided variant for math, reasoning and code.

Usable on its own as a scorer over any records: `SingleAnswerJudge().judge(ctx.judge, items)`.
With k samples (`samples=k`) the rating is the median of the parsed ones; when none parses the
judgment is an error (value None), never a number.
"""

from __future__ import annotations

import json

from evalsuite.judges.base import Judge, JudgeItem, Judgment, median_or_none
from evalsuite.judges.parsing import parse_rating

from evalsuite.errors import DataError
from evalsuite.records import GenerateRequest


class SingleAnswerJudge(Judge):
    """LLM-as-judge: grade one answer 1-10 with a rubric."""

    default_template = "single"

    def _decide(self, item: JudgeItem, texts: list[list[str | None]]) -> Judgment:
        ratings = [parse_rating(t) for t in texts[0]]
        value = median_or_none(ratings)
        log = {"ratings": json.dumps(ratings)}
        if value is None:
            return Judgment(None, "no rating in the judge's verdict" if any(t is not None for t in texts[0])
                            else "the judge returned no verdict", log)
        return Judgment(value, None, log)


class ReferenceJudge(SingleAnswerJudge):
    """LLM-as-judge: grade one answer 1-10 against a reference answer."""

    default_template = "reference"

    def requests(self, item: JudgeItem) -> list[GenerateRequest]:
        focus = item.focus or len(item.turns)
        missing = [i + 1 for i, t in enumerate(item.turns[:focus]) if not t.get("reference")]
        if missing:
            raise DataError(f"reference-guided judging needs a reference answer for turn(s) {missing}")
        return super().requests(item)
