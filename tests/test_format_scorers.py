"""Format scorers: each passes and fails with a reason; composing them in a user task works end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalsuite import registry
from evalsuite.errors import UsageError
from evalsuite.records import Sample
from evalsuite.rundir import load_run
from tests.plugin_dist import install_entry_points
from evalsuite.runner import RunConfig, score_outputs
from evalsuite.scorers import format as fmt

S = Sample("1", "question", target="Paris")
NAMES = [
    "json_valid",
    "regex_match",
    "exact_match",
    "contains",
    "starts_with",
    "word_count",
    "sentence_count",
    "paragraph_count",
    "python_code_block",
    "markdown_table",
    "markdown_list",
    "max_length",
]

TABLE = "| a | b |\n|---|:-:|\n| 1 | 2 |\n| 3 | 4 |"
CODE = "Here:\n```python\ndef f(x):\n    return x + 1\n```\n"

# (scorer, kwargs, passing output, failing output)
CASES = [
    ("json_valid", {}, '```json\n{"a": [1, 2]}\n```', '{"a": [1, 2],}'),
    (
        "json_valid",
        {"schema": {"type": "object", "required": ["age"], "properties": {"age": {"type": "integer"}}}},
        '{"age": 3}',
        '{"age": "three"}',
    ),
    ("regex_match", {"pattern": r"\b\d{4}-\d{2}-\d{2}\b"}, "on 2024-01-31.", "on 31/01/2024"),
    ("regex_match", {}, "It is Paris.", "It is Lyon."),  # pattern defaults to the target
    ("exact_match", {"ignore_case": True}, "  paris ", "Paris, France"),
    ("exact_match", {"target": ["yes", "y"]}, "y", "yes!"),
    ("contains", {"needles": ["red", "blue"]}, "red and blue", "red only"),
    ("contains", {"needles": ["red", "blue"], "mode": "any"}, "blue", "green"),
    ("starts_with", {"prefix": "Answer:", "ignore_case": True}, "\n answer: 4", "The answer: 4"),
    ("word_count", {"n": 3, "relation": "at most"}, "one two three", "one two three four"),
    ("sentence_count", {"n": 2, "relation": "exactly"}, "Dr. Who came. He left.", "One. Two. Three."),
    ("paragraph_count", {"n": 2}, "First.\n\n  \nSecond.", "Only one.\nStill one."),
    ("python_code_block", {}, CODE, "```python\ndef f(:\n```"),
    ("markdown_table", {"min_rows": 2, "columns": 2}, TABLE, "| a | b |\n| 1 | 2 |"),
    ("markdown_list", {"min_items": 2}, "Items:\n- a\n* b", "- a\nnot a list"),
    ("markdown_list", {"min_items": 2, "ordered": True}, "1. a\n2) b", "- a\n- b"),
    ("max_length", {"n": 5}, " hello ", "hello!"),
    ("max_length", {"n": 2, "unit": "words"}, "two words", "three words here"),
]


@pytest.mark.parametrize("name,kwargs,good,bad", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_scorer_passes_and_fails_with_a_reason(name: str, kwargs: dict, good: str, bad: str) -> None:
    fn = getattr(fmt, name)
    ok, ko = fn(S, good, **kwargs), fn(S, bad, **kwargs)
    assert ok.values == {name: 1.0}, ok.explanation
    assert ko.values == {name: 0.0}, ko.explanation
    assert ko.explanation[name]


def test_every_scorer_is_covered_and_resolves_through_its_entry_point() -> None:
    assert sorted({c[0] for c in CASES}) == sorted(NAMES)
    for name in NAMES:
        assert registry.get("scorers", name) is getattr(fmt, name)


def test_failure_reasons_say_what_was_wrong() -> None:
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}
    why = fmt.json_valid(S, '{"tags": ["a", 2]}', schema=schema).explanation["json_valid"]
    assert "tags/1" in why and "not of type 'string'" in why
    assert "line 2" in fmt.python_code_block(S, "```python\nx = 1\ny = (\n```").explanation["python_code_block"]
    assert fmt.word_count(S, "a b", n=3).explanation["word_count"] == "2 words, need at least 3"
    assert (
        "1 rows x 2 columns"
        in fmt.markdown_table(S, TABLE.rsplit("\n", 1)[0], min_rows=2).explanation["markdown_table"]
    )


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="relation"):
        fmt.word_count(S, "a", n=1, relation="about")
    with pytest.raises(UsageError, match="target"):
        fmt.exact_match(Sample("2", "q"), "a")
    with pytest.raises(UsageError, match="unit"):
        fmt.max_length(S, "a", n=1, unit="tokens")


def test_code_block_without_parse_and_untagged_fence() -> None:
    assert fmt.python_code_block(S, "```\nprint(1)\n```").values["python_code_block"] == 1.0
    assert fmt.python_code_block(S, "```js\nlet x;\n```").values["python_code_block"] == 0.0
    assert fmt.python_code_block(S, "```python\ndef (\n```", require_parse=False).values["python_code_block"] == 1.0


def test_combine_merges_values_and_reasons() -> None:
    s = fmt.combine(fmt.json_valid(S, "{}"), fmt.max_length(S, "{}", n=1))
    assert s.values == {"json_valid": 1.0, "max_length": 0.0}
    assert set(s.explanation) == {"json_valid", "max_length"}
    assert s.answer == {"json_valid": {}, "max_length": 2}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text("abc", min_size=1, max_size=6), max_size=20), st.sampled_from([" ", " , ", "\n", "-"]))
def test_word_count_property(words: list[str], sep: str) -> None:
    text = sep.join(words)
    assert fmt.count_words(text) == len(words)
    assert fmt.word_count(S, text, n=len(words), relation="exactly").values["word_count"] == 1.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text("abc .", min_size=1, max_size=12).filter(str.strip), min_size=1, max_size=8),
    st.sampled_from(["\n\n", "\n \n", "\n\n\n"]),
)
def test_paragraph_count_property(paragraphs: list[str], sep: str) -> None:
    paragraphs = [p.strip() for p in paragraphs]
    assert len(fmt.split_paragraphs(sep.join(paragraphs))) == len(paragraphs)


# ---------------------------------------------------------------------------- the README snippet
# --8<-- README: a task plugin composing format scorers (keep in sync with the README)
from evalsuite.records import GenerateRequest, Sample, chat  # noqa: E402, F811
from evalsuite.scorers.format import combine, json_valid, max_length  # noqa: E402
from evalsuite.task import Task  # noqa: E402

PERSON = {"type": "object", "required": ["name", "born"], "properties": {"born": {"type": "integer"}}}


class PersonCard(Task):
    name = "person_card"

    def load(self, ctx):
        return [
            Sample(id=p, input=f"Reply with only a JSON object with keys name and born (year) for {p}.")
            for p in ("Ada Lovelace", "Alan Turing")
        ]

    def requests(self, sample):
        return [GenerateRequest(chat(sample.input), max_tokens=100)]

    def score(self, sample, outputs):
        text = outputs[0].text
        return combine(json_valid(sample, text, schema=PERSON), max_length(sample, text, n=200))


# pyproject.toml of the package:
# [project.entry-points."evalsuite.tasks"]
# person_card = "my_package.tasks:PersonCard"
# --8<--


def test_readme_snippet_task_scores_outputs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_entry_points(tmp_path / "site", monkeypatch, "person-card",
                         {"evalsuite.tasks": {"person_card": "tests.test_format_scorers:PersonCard"}})
    outputs = tmp_path / "out.jsonl"
    outputs.write_text(
        json.dumps({"id": "Ada Lovelace", "output": '{"name": "Ada Lovelace", "born": 1815}'})
        + "\n"
        + json.dumps({"id": "Alan Turing", "output": '{"name": "Alan Turing", "born": "1912"}'})
        + "\n"
    )
    run = load_run(
        score_outputs(RunConfig(tasks=["person_card"], output_dir=str(tmp_path), use_cache=False), outputs=str(outputs))
    )
    metrics = run.tasks["person_card"].metrics
    assert metrics["json_valid"].value == 0.5 and metrics["max_length"].value == 1.0
    turing = next(r for r in run.records if r.sample.id == "Alan Turing")
    assert (
        "born" in turing.score.explanation["json_valid"]
        and "not of type 'integer'" in turing.score.explanation["json_valid"]
    )


def test_format_check_task_resolves_scorers_by_name(tmp_path: Path) -> None:
    """`format_check`: checks named per line (with options) or by the `checks` task argument, scored by name."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        json.dumps({"id": "a", "prompt": "JSON please", "checks": {"json_valid": {}, "max_length": {"n": 20}}}) + "\n"
        + json.dumps({"id": "b", "prompt": "A list please"}) + "\n"
    )
    outputs = tmp_path / "o.jsonl"
    outputs.write_text(json.dumps({"id": "a", "output": '{"k": 1}'}) + "\n" + json.dumps({"id": "b", "output": "no list"}) + "\n")
    cfg = RunConfig(tasks=["format_check"], output_dir=str(tmp_path / "runs"), use_cache=False,
                    task_args={"format_check": {"prompts": str(prompts), "checks": "markdown_list"}})
    run = load_run(score_outputs(cfg, outputs=str(outputs)))
    m = run.tasks["format_check"].metrics
    assert m["json_valid"].value == 1.0 and m["max_length"].value == 1.0 and m["markdown_list"].value == 0.0
    assert m["all_pass"].value == 0.5 and m["markdown_list"].n == 1  # only line b asks for a list
