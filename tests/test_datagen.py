"""`evalsuite data`: templates, filters, dedup, mixtures, output formats, and real Self-Instruct."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalsuite.cli import main
from evalsuite.datagen import filters as F
from evalsuite.datagen import mixtures, templates
from evalsuite.datagen.rows import read_rows, to_format
from evalsuite.datagen.self_instruct import (
    SelfInstructConfig,
    encode_prompt,
    parse_instructions,
)
from evalsuite.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


def _rows(*instructions: str) -> list[dict]:
    return [{"instruction": i, "input": "", "output": f"answer {k}"} for k, i in enumerate(instructions)]


# ---------------------------------------------------------------------------- templates
def test_template_expansion_is_deterministic_capped_and_deduplicated(tmp_path: Path) -> None:
    spec = templates.load_spec(REPO / "examples" / "templates.yaml")
    rows = templates.expand(spec)
    assert rows == templates.expand(spec)  # same file, same rows
    assert rows != templates.expand(spec, seed=1)
    keys = [r["instruction"].lower() + r["input"] for r in rows]
    assert len(keys) == len(set(keys))
    by_template = {r["provenance"]["template"] for r in rows[:3]}
    assert by_template == {"explain", "compare", "rewrite"}  # interleaved: every template early
    explain = [r for r in rows if r["provenance"]["template"] == "explain"]
    assert len(explain) == 15 and all("{" not in r["instruction"] for r in rows)  # 5 concepts x 3 ages
    assert explain[0]["instruction"] == "Explain {concept} as if I were {age_group}.".format_map(explain[0]["provenance"]["slots"])

    capped = templates.expand({"templates": [{"instruction": "Say {w}.", "slots": {"w": list("abcdefgh")}, "max": 3},
                                             {"instruction": "say {w}", "slots": {"w": ["a", "b"]}}]})
    assert len(capped) <= 5 and len({r["instruction"].lower().rstrip(".") for r in capped}) == len(capped)
    with pytest.raises(DataError, match="slot"):
        templates.expand({"templates": [{"instruction": "Explain {missing}."}]})


def test_template_cli_writes_messages_format(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    assert main(["data", "template", str(REPO / "examples" / "templates.yaml"), "--out", str(out), "--format", "messages"]) == 0
    rows = _jsonl(out)
    assert rows and all(r["messages"][0]["role"] == "user" and r["provenance"]["source"].startswith("template") for r in rows)
    assert json.loads((tmp_path / "t.jsonl.report.json").read_text())["instructions"] == len(rows)


# ---------------------------------------------------------------------------- filters
def test_near_duplicates_with_small_edits_are_removed() -> None:
    base = "Write a short poem about the sea and the wind at night, in the style of a sailor's song."
    edits = [
        base.replace("short", "shrot"),  # typo
        base.replace(", in", " in").upper(),  # punctuation and case
        base.replace("the sea", "the ocean"),  # one word swapped
        base + " Thanks!",  # a word appended
    ]
    distinct = ["Explain how a refrigerator keeps food cold, for a ten-year-old reader.",
                "List five tips for writing clear commit messages in a software team."]
    kept, report = F.run_filters(_rows(base, *edits, *distinct), [("near_dedup", F.near_dedup())])
    assert [r["instruction"] for r in kept] == [base, *distinct]
    assert report["filters"][0]["removed"] == 4
    assert all(r["provenance"]["filters"] == ["near_dedup"] for r in kept)


def test_exact_length_blocklist_and_rouge_filters() -> None:
    rows = _rows("Describe the water cycle in four steps.", "describe the WATER cycle in four steps!",
                 "Hi", "Draw a picture of a cat.", "Summarise the story of Hamlet in two sentences.",
                 "Summarise the story of Hamlet in three sentences.")
    chain = [("length", F.length(3, 150)), ("blocklist", F.blocklist()), ("exact_dedup", F.exact_dedup()),
             ("rouge", F.rouge(0.7))]
    kept, report = F.run_filters(rows, chain)
    assert [r["instruction"] for r in kept] == ["Describe the water cycle in four steps.",
                                                "Summarise the story of Hamlet in two sentences."]
    assert [f["removed"] for f in report["filters"]] == [1, 1, 1, 1]
    assert report["filters"][1]["examples"][0]["reason"] == "blocked keyword 'draw'"
    assert kept[0]["provenance"]["filters"] == ["length", "blocklist", "exact_dedup", "rouge"]
    # against an existing pool, the first one is no longer novel
    kept, _ = F.run_filters(rows[:1], [("rouge", F.rouge(0.7, pool=["Describe the water cycle in 4 steps."]))])
    assert kept == []


def test_filter_cli_on_seed_tasks(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "self_instruct" / "seed_tasks.jsonl"
    out = tmp_path / "f.jsonl"
    assert main(["data", "filter", str(src), "--out", str(out), "--blocklist", "poem,story"]) == 0
    rows = _jsonl(out)
    report = json.loads((tmp_path / "f.jsonl.report.json").read_text())
    assert report["input_rows"] == len(read_rows(src)) and report["output_rows"] == len(rows)
    assert 100 < len(rows) < 175
    assert not any("poem" in r["instruction"].lower().split() for r in rows)
    assert all(set(r) >= {"instruction", "input", "output", "provenance"} for r in rows)


# ---------------------------------------------------------------------------- mixtures
def test_mixture_proportions_tokens_and_upsampling(tmp_path: Path) -> None:
    a = tmp_path / "general.jsonl"
    b = tmp_path / "code.jsonl"
    a.write_text("".join(json.dumps({"instruction": f"q{i}", "output": "short"}) + "\n" for i in range(90)))
    b.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"c{i}"},
                                                  {"role": "assistant", "content": "x " * 20}]}) + "\n" for i in range(10)))
    out = tmp_path / "mix.jsonl"
    assert main(["data", "mix", "--source", f"general={a}:3", "--source", f"code={b}:1", "--out", str(out)]) == 0
    report = json.loads((tmp_path / "mix.jsonl.report.json").read_text())
    assert report["rows"] == 40  # the largest mixture with no upsampling: 10 code rows are 25%
    assert report["sources"]["code"]["row_share"] == 0.25 and report["sources"]["general"]["taken"] == 30
    assert report["sources"]["code"]["word_share"] > 0.5  # long answers dominate length
    names = [r["provenance"]["mixture_source"] for r in _jsonl(out)]
    assert names.count("code") == 10 and names != sorted(names)  # shuffled

    _, rep = mixtures.build_mixture([mixtures.parse_source(f"general={a}:1"), mixtures.parse_source(f"code={b}:1")],
                                       total=40, replace=True)
    assert rep["sources"]["code"]["taken"] == 20 and rep["sources"]["code"]["repeats"] == 10
    _, rep = mixtures.build_mixture([mixtures.parse_source(f"{a}:1"), mixtures.parse_source(f"{b}:1")], total=40)
    assert rep["sources"]["code"]["taken"] == 10  # no --replace: used whole, shortfall reported
    assert mixtures.allocate(10, [1, 1, 1]) == [4, 3, 3]


def test_mixture_report_names_its_length_unit(tmp_path: Path, smollm2_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Whitespace words are labelled words; only a real tokenizer's counts are called tokens."""
    src = tmp_path / "a.jsonl"
    src.write_text("".join(json.dumps({"instruction": f"Tokenise antidisestablishmentarianism {i}", "output": "ok"}) + "\n"
                           for i in range(4)))
    out = tmp_path / "mix.jsonl"
    assert main(["data", "mix", "--source", f"a={src}", "--out", str(out)]) == 0
    words = json.loads((tmp_path / "mix.jsonl.report.json").read_text())
    assert words["unit"] == "words" and words["words"] == 16 and "tokens" not in words
    assert set(words["sources"]["a"]) >= {"words", "word_share"} and "tokens" not in words["sources"]["a"]
    assert "16 words (whitespace words" in capsys.readouterr().out

    assert main(["data", "mix", "--source", f"a={src}", "--out", str(out), "--tokenizer", str(smollm2_dir)]) == 0
    tokens = json.loads((tmp_path / "mix.jsonl.report.json").read_text())
    assert tokens["unit"] == "tokens" and tokens["tokens"] > tokens.get("words", 16) and "words" not in tokens
    assert tokens["sources"]["a"]["token_share"] == 1.0
    assert f"{tokens['tokens']} tokens" in capsys.readouterr().out
    assert main(["data", "mix", "--source", f"a={src}", "--out", str(out), "--tokenizer", str(tmp_path / "nope")]) == 2


# ---------------------------------------------------------------------------- rows
def test_seed_format_expands_and_converts(tmp_path: Path) -> None:
    src = tmp_path / "seeds.jsonl"
    src.write_text(json.dumps({"id": "s0", "instruction": "Add.", "instances": [{"input": "1 2", "output": "3"},
                                                                               {"input": "2 2", "output": "4"}]}) + "\n")
    rows = read_rows(src)
    assert [(r["input"], r["output"]) for r in rows] == [("1 2", "3"), ("2 2", "4")]
    msg = to_format({**rows[0], "provenance": {"source": "x"}}, "messages")
    assert msg["messages"] == [{"role": "user", "content": "Add.\n\n1 2"}, {"role": "assistant", "content": "3"}]
    assert msg["provenance"] == {"source": "x"}


# ---------------------------------------------------------------------------- self-instruct
def test_prompt_and_parsing_follow_the_paper() -> None:
    prompt = encode_prompt(["Sort  these numbers:", "Name a colour."])
    assert prompt == "Come up with a series of tasks:\n1. Sort these numbers\n2. Name a colour.\n3."
    text = " Write a haiku about rain.\n4. Plot a graph of sales.\n5. ok\n6. ¿Qué es la fotosíntesis en las plantas?\n7. Translate the sentence into French and expl"
    kept, why = parse_instructions(text, truncated=True, cfg=SelfInstructConfig())
    assert kept == ["Write a haiku about rain."]
    assert why == {"length": 1, "blocklist": 1, "format": 1}  # and the truncated last one is dropped


@pytest.fixture
def one_torch_thread():
    """CPU generation on a machine shared with other jobs: 2 intra-op threads contend and run ~8x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_self_instruct_with_real_smollm2_is_cached_and_resumable(tmp_path: Path, smollm2_dir: Path, shared_data: Path,
                                                                 one_torch_thread: None) -> None:
    import sqlite3

    from evalsuite.cache import CallCache
    from evalsuite.runner import ModelClient

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join((shared_data / "self_instruct" / "seed_tasks.jsonl").open().readlines()[:24]))
    cache = tmp_path / "calls.sqlite"
    cmd = ["data", "self-instruct", "--model", str(smollm2_dir), "--seeds", str(seeds), "--num-instructions", "2",
           "--batch", "2", "--max-tokens", "64", "--max-rounds", "2", "--seed", "3", "--response-tokens", "24",
           "--cache-path", str(cache)]
    assert main(cmd + ["--out", str(tmp_path / "a.jsonl")]) == 0
    rows = _jsonl(tmp_path / "a.jsonl")
    report = json.loads((tmp_path / "a.jsonl.report.json").read_text())
    assert report["instructions"]["generated"] >= 1 and 1 <= len(rows) <= 2 == report["instructions"]["kept"]
    seed_texts = {r["instruction"] for r in _jsonl(seeds)}
    for r in rows:
        assert r["instruction"] and r["output"] and r["input"] == "" and r["instruction"] not in seed_texts
        prov = r["provenance"]
        assert prov["source"] == "self-instruct" and prov["generator_fingerprint"] and len(prov["prompt_tasks"]) == 8
        assert prov["response_model"] and "rouge_l<0.7" in prov["filters"]

    def cached_calls() -> int:
        with sqlite3.connect(cache) as db:
            return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    calls = cached_calls()
    assert calls >= 2 + len(rows)  # generation prompts + one response per row
    # the same command again (a resumed run) replays every call from the cache: same rows, no new call
    assert main(cmd + ["--out", str(tmp_path / "b.jsonl")]) == 0
    assert (tmp_path / "b.jsonl").read_text() == (tmp_path / "a.jsonl").read_text()
    assert cached_calls() == calls

    client = ModelClient(str(smollm2_dir), {}, CallCache(cache))
    try:
        kept, jrep = F.run_filters(rows, [("judge", F.judge(client, min_score=0, max_tokens=16))])
    finally:
        client.close()
    judged = jrep["filters"][0]
    assert judged["in"] == len(rows) == len(kept) + judged["removed"]
    assert all(isinstance(r["provenance"]["judge_score"], float) for r in kept)
    assert all(e["reason"] == "judge gave no rating" or e["reason"].startswith("judge score") for e in judged["examples"])
