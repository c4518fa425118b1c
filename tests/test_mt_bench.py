"""MT-Bench: real data loading, two-turn requests, single grading with SmolLM2 as the judge
(in-process, through the runner; re-scoring asks the judge nothing), and pairwise mode against a
baseline run with a real OpenAI-compatible judge server."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from evalsuite.judges.tasking import answers
from evalsuite.tasks.mt_bench import MTBench

from evalsuite import rundir, runner
from evalsuite.errors import UsageError
from evalsuite.records import Output, Sample, SampleRecord
from evalsuite.runner import RunConfig, run_eval, score_outputs
from evalsuite.task import TaskContext
from tests.judge_server import (  # noqa: F401 - fixtures
    CountingBackend,
    JudgeServer,
    judge_server,
    smollm2_judge_backend,
)

QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a haiku about rain.", "Now make it about snow."]},
    {"question_id": 111, "category": "math", "turns": ["What is 3 + 4?", "Double that."],
     "reference": ["question-file reference"]},
]
GPT4_REFS = [{"question_id": 111, "answer_id": "x", "model_id": "gpt-4", "tstamp": 0.0,
              "choices": [{"index": 0, "turns": ["3 + 4 = 7", "7 * 2 = 14"]}]}]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A two-question MT-Bench tree in the shared/data layout."""
    root = tmp_path / "data" / "mt_bench"
    (root / "reference_answer").mkdir(parents=True)
    (root / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (root / "reference_answer" / "gpt-4.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GPT4_REFS))
    return tmp_path / "data"


def test_loads_the_real_mt_bench(shared_data: Path) -> None:
    if not (shared_data / "mt_bench" / "question.jsonl").is_file():
        pytest.skip(f"no mt_bench data under {shared_data}")
    samples = MTBench().load(TaskContext(data_dir=shared_data))
    assert len(samples) == 80 and set(Counter(s.metadata["category"] for s in samples).values()) == {10}
    by_id = {s.id: s for s in samples}
    assert len(by_id["101"].target) == 2 and by_id["101"].metadata["category"] == "reasoning"  # GPT-4 reference
    assert by_id["81"].target is None and all(len(s.metadata["turns"]) == 2 for s in samples)


def test_second_turn_carries_the_first_answer(data_dir: Path) -> None:
    task = MTBench(max_tokens=7)
    sample = task.load(TaskContext(data_dir=data_dir))[1]
    assert sample.target == ["3 + 4 = 7", "7 * 2 = 14"]  # GPT-4 reference file wins over the question's own
    (first,) = task.requests(sample)
    (second,) = task.next_requests(sample, [Output(texts=["Seven."])])
    assert first.prompt == ({"role": "user", "content": "What is 3 + 4?"},)
    assert [m["content"] for m in second.prompt] == ["What is 3 + 4?", "Seven.", "Double that."]  # type: ignore[union-attr]
    assert second.max_tokens == 7 and task.next_requests(sample, [Output(texts=["a"]), Output(texts=["b"])]) == []


def test_fastchat_temperatures_sample_writing_and_keep_math_greedy(data_dir: Path) -> None:
    task = MTBench(temperature="fastchat", seed=7)  # the run's --seed arrives as the seed argument
    writing, math = task.load(TaskContext(data_dir=data_dir))
    (w,), (m,) = task.requests(writing), task.requests(math)
    assert (w.temperature, w.seed) == (0.7, 7) and (m.temperature, m.seed) == (0.0, None)
    with pytest.raises(UsageError, match="fastchat"):
        MTBench(temperature="hot")


def test_fastchat_answer_files_give_both_turns() -> None:
    task = MTBench()
    texts = task.parse_outputs([{"question_id": 81, "choices": [{"index": 0, "turns": ["t1", "t2"]}]}])
    assert texts == {"81": ["t1", "t2"]}
    record = SampleRecord("mt_bench", Sample("81", "q", metadata={"turns": ["q1", "q2"]}), [], [Output(texts=texts["81"])])
    assert answers(record, 2) == ["t1", "t2"]


def test_bad_options_and_a_missing_judge_are_usage_errors(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="baseline"):
        MTBench(mode="pairwise")
    with pytest.raises(UsageError, match="mode"):
        MTBench(mode="triple")
    outputs = _answer_file(tmp_path / "a.jsonl", "x")
    with pytest.raises(UsageError, match="--judge"):
        score_outputs(RunConfig(tasks=["mt_bench"], data_dir=str(data_dir), output_dir=str(tmp_path / "runs")), outputs=str(outputs))


def _answer_file(path: Path, word: str) -> Path:
    """An answer file in FastChat's model_answer format: answer length grows with `word`."""
    rows = [{"question_id": q["question_id"], "choices": [{"index": 0, "turns": [f"{word} one", f"{word} two"]}]} for q in QUESTIONS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pairwise_mode_against_a_baseline_run(judge_server: JudgeServer, data_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    def cfg(**task_args: Any) -> RunConfig:
        return RunConfig(tasks=["mt_bench"], task_args=task_args, data_dir=str(data_dir), output_dir=str(tmp_path / "runs"),
                         cache_path=str(tmp_path / "calls.sqlite"), judge="openai:judge", judge_args=judge_server.judge_args())

    base = score_outputs(cfg(), outputs=str(_answer_file(tmp_path / "base.jsonl", "ok")))
    single = json.loads((base / rundir.RESULTS).read_text())["tasks"]["mt_bench"]
    assert single["metrics"]["score"]["value"] == 7.0 and set(single["groups"]) == {"math", "writing"}
    assert judge_server.answered == 4  # 2 questions x 2 turns
    assert "7 * 2 = 14" in judge_server.prompts[3] and "Double that." in judge_server.prompts[3]  # reference-guided turn 2
    run = score_outputs(cfg(mode="pairwise", baseline=str(base)), outputs=str(_answer_file(tmp_path / "c.jsonl", "longer")))
    task = json.loads((run / rundir.RESULTS).read_text())["tasks"]["mt_bench"]
    assert judge_server.answered == 4 + 2 * 2 * 2  # 2 questions x 2 turns x both orders
    assert task["metrics"]["win"]["value"] == 1.0 and task["metrics"]["inconsistent"]["value"] == 0.0
    # "longer one" vs "ok one": 4 characters more in each turn; LC fitted on the 4 judged turns
    assert task["metrics"]["length_diff"]["value"] == 4.0 and task["metrics"]["turn_2.length_diff"]["value"] == 4.0
    assert task["metrics"]["lc_win_rate"]["n"] == 4 and task["metrics"]["lc_win_rate"]["value"] > 0.5
    assert task["groups"]["math"]["turn_2"]["value"] == 1.0
    turn2 = judge_server.prompts[-1]
    assert "longer one" in turn2 and "ok one" in turn2 and "longer two" in turn2  # turn 2 judged in context
    assert task["config"]["judge"]["judges"]["PairwiseJudge"]["template"] == "evalsuite/pairwise"


def test_custom_rubric_reaches_every_judge_prompt(judge_server: JudgeServer, data_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("RUBRIC-X: brevity, politeness, and no jargon\n")  # commas: only a file can carry them
    cfg = RunConfig(tasks=["mt_bench"], task_args={"rubric": str(rubric)}, data_dir=str(data_dir),
                    output_dir=str(tmp_path / "runs"), judge="openai:judge", judge_args=judge_server.judge_args())
    run = score_outputs(cfg, outputs=str(_answer_file(tmp_path / "a.jsonl", "x")))
    assert judge_server.answered == 4 and all("RUBRIC-X: brevity, politeness, and no jargon" in p for p in judge_server.prompts)
    assert not any("helpfulness" in p for p in judge_server.prompts)  # the default rubric is gone
    judges = json.loads((run / rundir.RESULTS).read_text())["tasks"]["mt_bench"]["config"]["judge"]["judges"]
    assert {j["rubric"] for j in judges.values()} == {"RUBRIC-X: brevity, politeness, and no jargon"}  # single and reference
    assert MTBench(rubric="be terse", mode="pairwise", baseline="runs/x")._judges["pairwise"].rubric == "be terse"


@pytest.mark.slow
def test_single_mode_with_smollm2_judge_then_rescore_from_cache(
    data_dir: Path, tmp_path: Path, tiny_model_dir: Path, smollm2_judge_backend: Any, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    counting = CountingBackend(smollm2_judge_backend)
    from evalsuite import serving

    real_make_backend = serving.make_backend
    # the judge is the SmolLM2 the session already loaded (same object the judge client would build)
    monkeypatch.setattr(serving, "make_backend", lambda model, backend, args: counting if model == "smollm2-judge"
                        else real_make_backend(model, backend, args))
    cfg = RunConfig(tasks=["mt_bench"], model=str(tiny_model_dir), limit=2, data_dir=str(data_dir),
                    output_dir=str(tmp_path / "runs"), cache_path=str(tmp_path / "calls.sqlite"), judge="smollm2-judge",
                    task_args={"max_tokens": 4, "judge_max_tokens": 6},
                    max_judge_errors=1.0)  # SmolLM2 is too weak to grade: this test is about the mechanics
    out = run_eval(cfg)
    assert counting.calls == 4  # 2 questions x 2 turns, in one batch
    log = rundir.load_run(out)
    for rec in log.records:
        assert len(rec.outputs) == 2 and rec.requests[1].prompt[1]["content"] == rec.outputs[0].text  # type: ignore[union-attr]
        values, expl = rec.score.values, rec.score.explanation  # type: ignore[union-attr]
        assert set(values) >= {"turn_1", "turn_2", "score", "judge_error"}
        for t in ("turn_1", "turn_2"):
            assert (values[t] is None) == (f"{t}.error" in expl)  # no verdict -> an error, never a number
            assert values[t] is None or 1 <= values[t] <= 10
            assert expl[f"{t}.model"] == smollm2_judge_backend.model_name and len(expl[f"{t}.template_sha256"]) == 64
        template = "evalsuite/reference" if rec.sample.metadata["category"] == "math" else "evalsuite/single"
        assert expl["turn_1.template"] == template
    results = json.loads((out / rundir.RESULTS).read_text())["tasks"]["mt_bench"]
    assert set(results["groups"]) == {"math", "writing"} and results["judge"]["fingerprint"]
    rescored = score_outputs(cfg, run_dir=str(out))
    assert counting.calls == 4  # re-scoring asked the judge nothing: every verdict came from the cache
    again = rundir.load_run(rescored).records
    assert [r.score.values for r in again] == [r.score.values for r in log.records]  # type: ignore[union-attr]
    assert all(r.score.explanation["turn_2.cached"] == "1/1" for r in again)  # type: ignore[union-attr]


def test_run_seed_reaches_sampled_answers_and_greedy_records_none(data_dir: Path) -> None:
    """`--seed` becomes the seed argument of tasks that declare one; a greedy MT-Bench records no seed."""
    ctx = TaskContext(data_dir=data_dir, seed=99)
    sampled = runner.build_tasks(["mt_bench"], {"mt_bench": {"temperature": "fastchat"}}, ctx)["mt_bench"]
    writing = sampled.load(ctx)[0]
    assert sampled.requests(writing)[0].seed == 99 and sampled.config()["seed"] == 99
    greedy = runner.build_tasks(["mt_bench"], {}, ctx)["mt_bench"]
    assert greedy.config()["seed"] is None and greedy.requests(writing)[0].seed is None


def test_judges_are_looked_up_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`judge_kind=NAME` resolves in the `evalsuite.judges` group; a judge of the wrong kind or name is a UsageError."""
    from evalsuite.judges.single import SingleAnswerJudge
    from evalsuite.tasks.winrate import WinRate

    from tests.plugin_dist import install_entry_points

    install_entry_points(tmp_path, monkeypatch, "strict-judges",
                         {"evalsuite.judges": {"strict": "evalsuite.judges.single:SingleAnswerJudge"}})
    task = MTBench(judge_kind="strict")
    assert type(task._judges["single"]) is SingleAnswerJudge
    assert set(task.config()["judge"]["judges"]) == {"SingleAnswerJudge", "ReferenceJudge"}
    with pytest.raises(UsageError, match="needs a judge that grades one answer"):
        MTBench(judge_kind="pairwise")
    with pytest.raises(UsageError, match="compares two answers .*pairwise"):
        WinRate(judge_kind="strict")
    with pytest.raises(UsageError, match="unknown judge 'singel'.*Did you mean: single"):
        MTBench(judge_kind="singel")


def test_judge_metric_directions_are_declared() -> None:
    """Judge errors, position bias and length effects are lower-is-better, win and score higher."""
    task = MTBench(mode="pairwise", baseline="runs/x")
    for metric in ("judge_error", "inconsistent", "turn_1.inconsistent", "turn_2.length_diff", "lc_length_coef",
                   "turn_1.first_position_bias"):
        assert task.metric_higher_is_better(metric) is False, metric
    assert task.metric_higher_is_better("win") and task.metric_higher_is_better("lc_win_rate")
    assert task.metric_higher_is_better("turn_1") and MTBench().metric_higher_is_better("score")
