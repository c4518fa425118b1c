"""Pairwise comparison in both orders, with MT-Bench's rule for position bias.

Each pair is judged twice: (A=x, B=y) and (A=y, B=x). If the two verdicts name the same winner
(or both say tie) that is the outcome; if they disagree the judgment is "inconsistent" and counts
as a tie (Zheng et al. 2023). The share of inconsistent judgments is the position-bias rate; when
both orders pick the answer shown first, `first_position_bias` records it. Values are for x:
1 = x wins, 0.5 = tie, 0 = y wins.
"""

from __future__ import annotations

import json
from typing import Any

from evalsuite.judges.base import Judge, JudgeItem, Judgment, median_or_none
from evalsuite.judges.parsing import parse_preference


SCORE_FOR_X = {("A", False): 1.0, ("B", False): 0.0, ("A", True): 0.0, ("B", True): 1.0}


class PairwiseJudge(Judge):
    """LLM-as-judge: A vs B vs tie, asked in both orders."""

    default_template = "pairwise"
    pairwise = True

    def _prompts(self, item: JudgeItem) -> list[dict[str, Any]]:
        swapped = JudgeItem([{**t, "answer_a": t["answer_b"], "answer_b": t["answer_a"]} for t in item.turns], item.focus)
        return [item.variables(self.rubric), swapped.variables(self.rubric)]

    def _decide(self, item: JudgeItem, texts: list[list[str | None]]) -> Judgment:
        prefs = [[parse_preference(t) for t in group] for group in texts]
        per_order = [_outcome(median_or_none([_x_score(p, swapped=bool(o)) for p in group])) for o, group in enumerate(prefs)]
        log = {"preferences": json.dumps(prefs)}
        if any(v is None for v in per_order):
            which = " and ".join(name for name, v in zip(("x-first", "y-first"), per_order) if v is None)
            return Judgment(None, f"no readable verdict in the {which} order", log)
        first, second = per_order
        inconsistent = first != second
        value = 0.5 if inconsistent else first
        # both orders preferred whatever was shown first: the bias MT-Bench warns about
        first_bias = inconsistent and first == 1.0 and second == 0.0
        log["outcome"] = "inconsistent (counted as tie)" if inconsistent else {1.0: "x wins", 0.5: "tie", 0.0: "y wins"}[value]
        return Judgment(value, None, log, {"inconsistent": float(inconsistent), "first_position_bias": float(first_bias)})


def _x_score(pref: str | None, swapped: bool) -> float | None:
    if pref is None:
        return None
    return 0.5 if pref == "tie" else SCORE_FOR_X[(pref, swapped)]


def _outcome(median: float | None) -> float | None:
    """A median of k preferences (e.g. 0.75) read as the outcome it leans to."""
    if median is None:
        return None
    return 1.0 if median > 0.5 else 0.0 if median < 0.5 else 0.5
