"""Judges: verdict parsing, prompt templates, both-order pairwise logic, k-sample medians, and
real judging with SmolLM2 in-process (mechanics, not taste) including cache hits on re-run."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from evalsuite.judges.base import JudgeItem, run_judges
from evalsuite.judges.pairwise import PairwiseJudge
from evalsuite.judges.parsing import parse_preference, parse_rating
from evalsuite.judges.prompts import load_template
from evalsuite.judges.single import ReferenceJudge, SingleAnswerJudge

from evalsuite.cache import CallCache
from evalsuite.errors import DataError, UsageError
from evalsuite.runner import ModelClient
from tests.judge_server import CountingBackend, smollm2_judge_backend  # noqa: F401 - pytest fixture

# pairs for the real-model pairwise test: distinct answers, neither a substring of the other or of the template
PAIRS = [("What is the capital of France?", "Paris is the capital of France.", "Berlin, I believe."),
         ("Give one word for a happy feeling.", "Joy.", "Sandwich."),
         ("What is 2 + 2?", "2 + 2 = 4.", "It is 5.")]


@pytest.mark.parametrize("text, expected", [
    ("Good answer.\nRating: [[7]]", 7.0),
    ("[[8.5]]", 8.5),
    ("Rating: 6/10", 6.0),
    ('{"rating": 4, "reason": "thin"}', 4.0),
    ("I would give it a score of 9.", 9.0),
    ("It lists 3 steps out of 12. Rating: [[5]]", 5.0),  # numbers in the reasoning do not count
    ("Rating: [[2]] at first, but on reflection Rating: [[3]]", 3.0),  # the last verdict wins
    ("8/10", 8.0),
    ("[[11]]", None),  # out of the 1-10 scale
    ("Rating: [N]", None),  # what SmolLM2 often writes: the placeholder, no number
    ('follow the format "[[rating]]"', None),
    ("", None),
    (None, None),
])
def test_parse_rating(text: str | None, expected: float | None) -> None:
    assert parse_rating(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("A is clearer.\n[[A]]", "A"),
    ("[[B]]", "B"),
    ("[[C]]", "tie"),
    ("[[tie]]", "tie"),
    ("Final verdict: Assistant B", "B"),
    ('{"winner": "A"}', "A"),
    ("At first [[A]] seemed right, but overall [[B]]", "B"),
    ("Both answers have merits.", None),
    ("[[D]]", None),
    (None, None),
])
def test_parse_preference(text: str | None, expected: str | None) -> None:
    assert parse_preference(text) == expected


def _contents(messages: tuple[dict[str, str], ...]) -> dict[str, str]:
    return {m["role"]: m["content"] for m in messages}


def test_default_templates_render_question_answer_and_reference() -> None:
    item = JudgeItem([{"question": "What is 6*7?", "answer": "42", "reference": "6*7 = 42"}])
    single = _contents(SingleAnswerJudge().requests(item)[0].prompt)  # type: ignore[arg-type]
    assert "What is 6*7?" in single["user"] and "42" in single["user"] and "[[N]]" in single["user"]
    assert "6*7 = 42" not in single["user"] and single["system"]
    ref = _contents(ReferenceJudge().requests(item)[0].prompt)  # type: ignore[arg-type]
    assert "6*7 = 42" in ref["user"]


def test_multi_turn_prompt_shows_earlier_turns_and_names_the_focus() -> None:
    turns = [{"question": "Q-one", "answer": "A-one"}, {"question": "Q-two", "answer": "A-two"}]
    first = _contents(SingleAnswerJudge().requests(JudgeItem(turns, focus=1))[0].prompt)["user"]  # type: ignore[arg-type]
    second = _contents(SingleAnswerJudge().requests(JudgeItem(turns, focus=2))[0].prompt)["user"]  # type: ignore[arg-type]
    assert "Q-two" not in first and "A-one" in first and "turn 1" in first
    assert "Q-one" in second and "A-one" in second and "A-two" in second and "turn 2" in second


def test_pairwise_asks_both_orders_with_answers_swapped() -> None:
    item = JudgeItem([{"question": "Q", "answer_a": "ANSWER-X", "answer_b": "ANSWER-Y"}])
    first, second = (_contents(r.prompt)["user"] for r in PairwiseJudge().requests(item))  # type: ignore[arg-type]
    assert first.index("ANSWER-X") < first.index("ANSWER-Y")
    assert second.index("ANSWER-Y") < second.index("ANSWER-X")


@pytest.mark.parametrize("first, second, value, inconsistent, first_bias", [
    ("[[A]]", "[[B]]", 1.0, 0.0, 0.0),  # x shown first wins, then x shown second wins: x wins
    ("[[B]]", "[[A]]", 0.0, 0.0, 0.0),  # y wins in both orders
    ("[[C]]", "[[C]]", 0.5, 0.0, 0.0),  # a consistent tie
    ("[[A]]", "[[A]]", 0.5, 1.0, 1.0),  # the verdict follows the position: inconsistent -> tie
    ("[[B]]", "[[B]]", 0.5, 1.0, 0.0),
    ("[[A]]", "[[C]]", 0.5, 1.0, 0.0),  # MT-Bench's rule: any disagreement is inconsistent
])
def test_pairwise_combines_both_orders(first: str, second: str, value: float, inconsistent: float, first_bias: float) -> None:
    j = PairwiseJudge()._decide(JudgeItem([]), [[first], [second]])
    assert j.error is None and j.value == value
    assert j.extra == {"inconsistent": inconsistent, "first_position_bias": first_bias}


def test_unparseable_pairwise_verdict_is_an_error_not_a_tie() -> None:
    j = PairwiseJudge()._decide(JudgeItem([]), [["[[A]]"], ["I cannot decide."]])
    assert j.value is None and "y-first" in (j.error or "")


def test_k_samples_vary_the_seed_and_take_the_median() -> None:
    judge = SingleAnswerJudge(samples=3, seed=10)
    reqs = judge.requests(JudgeItem([{"question": "q", "answer": "a"}]))
    assert [r.seed for r in reqs] == [10, 11, 12] and all(r.temperature > 0 for r in reqs)
    assert judge._decide(JudgeItem([]), [["[[3]]", "[[9]]", "[[5]]"]]).value == 5.0
    assert judge._decide(JudgeItem([]), [["[[3]]", "no verdict", "[[5]]"]]).value == 4.0
    failed = judge._decide(JudgeItem([]), [["?", "??", "???"]])
    assert failed.value is None and failed.error
    pair = PairwiseJudge(samples=3)._decide(JudgeItem([]), [["[[A]]", "[[A]]", "[[B]]"], ["[[B]]", "junk", "[[B]]"]])
    assert pair.value == 1.0 and pair.extra["inconsistent"] == 0.0


def test_judge_samples_can_change_later_and_bad_values_are_usage_errors() -> None:
    judge = PairwiseJudge()
    assert (judge.samples, judge.temperature) == (1, 0.0)
    judge.set_samples(3)  # what `--judge-samples 3` does to a task's judges
    assert (judge.samples, judge.temperature) == (3, 0.7)
    assert len(judge.requests(JudgeItem([{"question": "q", "answer_a": "x", "answer_b": "y"}]))) == 6  # 3 per order
    assert PairwiseJudge(temperature=0.2, samples=3).temperature == 0.2  # an explicit temperature is kept
    for bad in (0, "abc", 1.5):
        with pytest.raises(UsageError, match="judge_samples must be a whole number"):
            PairwiseJudge(samples=bad)  # type: ignore[arg-type]


def test_user_template_file_and_python_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = "{% set system %}Be strict.{% endset %}Q={{ question }} A={{ answer }} -> [[N]]"
    path = tmp_path / "mine.j2"
    path.write_text(source)
    tmpl = load_template(str(path), "single")
    assert tmpl.id == str(path) and tmpl.sha256 == hashlib.sha256(source.encode()).hexdigest()
    assert tmpl.render(question="q1", answer="a1") == ({"role": "system", "content": "Be strict."},
                                                       {"role": "user", "content": "Q=q1 A=a1 -> [[N]]"})
    (tmp_path / "my_judge_prompts.py").write_text(
        "TEXT = 'Grade: {{ answer }}'\n"
        "def build(**v):\n    return ('sys', 'ask about ' + v['question'])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_template("my_judge_prompts:TEXT", "single").render(answer="x")[-1]["content"] == "Grade: x"
    built = load_template("my_judge_prompts:build", "single")
    assert built.render(question="q") == ({"role": "system", "content": "sys"}, {"role": "user", "content": "ask about q"})
    assert "def build" in built.source
    sys.modules.pop("my_judge_prompts", None)


def test_template_errors_are_usage_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.j2"
    bad.write_text("{{ no_such_variable }}")
    with pytest.raises(UsageError, match="no_such_variable"):
        load_template(str(bad), "single").render(question="q")
    with pytest.raises(UsageError, match="neither a file"):
        load_template("does-not-exist.j2", "single")


def test_reference_judge_needs_a_reference() -> None:
    with pytest.raises(DataError, match="reference"):
        ReferenceJudge().requests(JudgeItem([{"question": "q", "answer": "a"}]))


@pytest.mark.slow
def test_real_judging_with_smollm2_then_all_cached(smollm2_judge_backend: Any, tmp_path: Path) -> None:  # noqa: F811
    cache_path = tmp_path / "calls.sqlite"
    single, pairwise = SingleAnswerJudge(max_tokens=8), PairwiseJudge(max_tokens=8)
    jobs = [(single, JudgeItem([{"question": "What is 2+2?", "answer": "4"}])),
            (pairwise, JudgeItem([{"question": "Name a colour.", "answer_a": "Blue.", "answer_b": "I like turtles."}]))]

    def judge_once() -> tuple[list[Any], CountingBackend]:
        client = ModelClient("smollm2-135m", {}, CallCache(cache_path))
        client._backend = counting = CountingBackend(smollm2_judge_backend)
        try:
            return run_judges(client, jobs), counting
        finally:
            client.cache.close()

    first, counting = judge_once()
    assert counting.calls == 3  # one single-grading call, two pairwise orders
    for j, n_calls in zip(first, (1, 2)):
        assert j.log["model"] == smollm2_judge_backend.model_name and j.log["fingerprint"] == smollm2_judge_backend.fingerprint
        assert len(j.log["template_sha256"]) == 64 and json.loads(j.log["sampling"])["max_tokens"] == 8
        verdicts = json.loads(j.log["verdicts"])
        assert len(verdicts) == n_calls and all(isinstance(v, str) and v for v in verdicts)
        assert j.log["cached"] == f"0/{n_calls}"
        # a weak judge may not give a verdict: then it is an error, never a made-up number
        assert (j.value is None) == (j.error is not None)
    rating = first[0].value
    assert rating is None or 1 <= rating <= 10
    again, counting = judge_once()
    assert counting.calls == 0  # every judgment came from the cache: the judge was not asked again
    assert [j.value for j in again] == [j.value for j in first]
    assert [j.log["cached"] for j in again] == ["1/1", "2/2"]


@pytest.mark.slow
def test_real_pairwise_asks_both_orders_and_follows_the_raw_verdicts(smollm2_judge_backend: Any, tmp_path: Path) -> None:  # noqa: F811
    """SmolLM2 in-process judges each pair in both orders; the recorded outcome is what MT-Bench's
    rule gives for the raw verdicts it logged (whatever the weak judge's taste). A terse user
    template, because within a few tokens the 135M model answers it with a readable verdict."""
    template = tmp_path / "terse.j2"
    template.write_text("Question: {{ question }}\n\nAnswer A: {{ answer_a }}\nAnswer B: {{ answer_b }}\n\nWhich answer is better? "
                        'Reply with one sentence: "The better answer is A." or "The better answer is B."')
    judge = PairwiseJudge(template=str(template), max_tokens=12)
    client = ModelClient("smollm2-135m", {}, CallCache(tmp_path / "calls.sqlite"))
    client._backend = counting = CountingBackend(smollm2_judge_backend)
    try:
        judgments = run_judges(client, [(judge, JudgeItem([{"question": q, "answer_a": x, "answer_b": y}])) for q, x, y in PAIRS])
    finally:
        client.cache.close()
    assert counting.calls == 2 * len(PAIRS)
    sent = [_contents(r.prompt)["user"] for r in counting.requests]
    for (q, x, y), j in zip(PAIRS, judgments):
        shown = [p for p in sent if q in p]
        assert len(shown) == 2 and sorted(p.index(x) < p.index(y) for p in shown) == [False, True]  # x first, then y first
        verdicts = json.loads(j.log["verdicts"])
        assert len(verdicts) == 2 and all(isinstance(v, str) for v in verdicts)
        prefs = [parse_preference(v) for v in verdicts]
        assert json.loads(j.log["preferences"]) == [[p] for p in prefs]
        if None in prefs:  # no readable verdict in some order: an error, never a tie
            assert j.value is None and j.error and "no readable verdict" in j.error
            continue
        x_first = {"A": 1.0, "B": 0.0, "tie": 0.5}[prefs[0]]  # x's score with x shown as A
        x_second = {"A": 0.0, "B": 1.0, "tie": 0.5}[prefs[1]]  # x's score with x shown as B
        assert j.error is None and j.value == (x_first if x_first == x_second else 0.5)
        assert j.extra == {"inconsistent": float(x_first != x_second), "first_position_bias": float(prefs == ["A", "A"])}
        assert j.log["outcome"] == ("inconsistent (counted as tie)" if x_first != x_second
                                    else {1.0: "x wins", 0.5: "tie", 0.0: "y wins"}[x_first])
    assert any(j.value is not None for j in judgments)  # the aggregation itself was exercised, not only the error path
