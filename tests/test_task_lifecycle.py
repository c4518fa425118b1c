"""The task contract: per-task arguments, run flags only where a task declares them, config() from
declared arguments, one prompt type, and GSM8K's majority vote over k samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalsuite import runner, taskargs
from evalsuite.cli import _config, build_parser
from evalsuite.data import read_jsonl
from evalsuite.errors import DataError, UsageError
from evalsuite.records import Output, Sample, SampleRecord, chat
from evalsuite.task import Task, TaskContext
from evalsuite.tasks.gsm8k import GSM8K

from .conftest import write_gsm8k


def _cfg(*argv: str):
    return _config(build_parser().parse_args(["run", "--model", "m", *argv]))


def test_per_task_arguments_in_both_forms_and_the_old_form_for_one_task() -> None:
    cfg = _cfg("--tasks", "mmlu,gsm8k,lm_eval:arc_easy", "-T", "mmlu.num_fewshot=0",
               "--task-args", "gsm8k:num_fewshot=1,max_tokens=9,lm_eval:arc_easy:num_fewshot=2")
    assert cfg.task_args == {"mmlu": {"num_fewshot": 0}, "gsm8k": {"num_fewshot": 1, "max_tokens": 9},
                             "lm_eval:arc_easy": {"num_fewshot": 2}}
    assert _cfg("--tasks", "gsm8k", "--task-args", "num_fewshot=0").task_args == {"gsm8k": {"num_fewshot": 0}}
    # -T wins over --task-args for the same key (it is parsed last)
    assert _cfg("--tasks", "gsm8k", "--task-args", "max_tokens=5", "-T", "gsm8k.max_tokens=7").task_args == {
        "gsm8k": {"max_tokens": 7}}


def test_build_tasks_reads_per_task_arguments(tmp_path: Path) -> None:
    ctx = TaskContext(data_dir=write_gsm8k(tmp_path))
    tasks = runner.build_tasks(["mmlu", "gsm8k"], {"mmlu": {"num_fewshot": 0}, "gsm8k": {"max_tokens": 9}}, ctx)
    assert tasks["mmlu"].config()["num_fewshot"] == 0 and tasks["gsm8k"].config()["num_fewshot"] == 5
    assert tasks["gsm8k"].config()["max_tokens"] == 9
    assert runner.build_tasks(["gsm8k"], {"max_tokens": 3}, ctx)["gsm8k"].max_tokens == 3  # flat: one task
    with pytest.raises(UsageError, match="name no task"):
        runner.build_tasks(["mmlu", "gsm8k"], {"max_tokens": 3}, ctx)


def test_sampling_flags_reach_the_tasks_that_declare_them_and_an_explicit_argument_wins() -> None:
    ctx = TaskContext(samples_per_task=4, temperature=0.5, seed=11)
    gsm = runner.build_tasks(["gsm8k"], {}, ctx)["gsm8k"]
    (req,) = gsm.requests(Sample("0", "Question: 1+1?\nAnswer:"))
    assert (req.n, req.temperature, req.seed) == (4, 0.5, 11)
    assert {k: gsm.config()[k] for k in ("samples_per_task", "temperature", "seed")} == {
        "samples_per_task": 4, "temperature": 0.5, "seed": 11}  # what the requests used
    mine = runner.build_tasks(["gsm8k"], {"gsm8k": {"temperature": 0.9}}, ctx)["gsm8k"]
    assert mine.config()["temperature"] == 0.9
    greedy = runner.build_tasks(["gsm8k"], {}, TaskContext(seed=11))["gsm8k"]
    assert greedy.config()["temperature"] == 0.0 and greedy.config()["seed"] is None


def test_config_is_the_declared_arguments_not_run_state() -> None:
    """Loading and scoring leave config() unchanged: it is the factory's arguments and nothing else."""

    class Plain(Task):
        name = "plain"

        def __init__(self, shots: int = 2, label: str = "x") -> None:
            self.shots, self.label = shots, label
            self.cache: dict = {}  # internal state, not an argument

    assert Plain(shots=3).config() == {"shots": 3, "label": "x"}
    task = GSM8K(num_fewshot=0)
    before = task.config()
    task.score(Sample("0", "q", target="#### 2"), [Output(texts=["#### 2"])])
    assert task.config() == before and before["num_fewshot"] == 0 and "stop" in before


def test_every_hook_has_a_default() -> None:
    class Minimal(Task):
        name = "minimal"

    t = Minimal()
    t.check_ready()
    t.setup(TaskContext())
    assert t.next_requests(Sample("0", "q"), []) == [] and t.config() == {}
    for hook, args in (("load", (TaskContext(),)), ("requests", (Sample("0", "q"),)), ("score", (Sample("0", "q"), []))):
        with pytest.raises(NotImplementedError, match=f"task 'minimal' must implement {hook}"):
            getattr(t, hook)(*args)


def test_gsm8k_majority_vote_over_k_samples() -> None:
    task = GSM8K(samples_per_task=3)
    assert task.temperature == 0.2  # self-consistency's temperature unless given
    sample = Sample("0", "q", target="x\n#### 18")
    votes = Output(texts=["so #### 18", "it is 7\n#### 7", "#### 18."])
    score = task.score(sample, [votes])
    assert score.values == {"exact_match_strict": 1.0, "exact_match_flexible": 1.0}
    assert score.answer["votes_strict"] == {"18": 1, "7": 1, "18.": 1} and score.answer["strict"] == "18"
    minority = task.score(sample, [Output(texts=["#### 7", "#### 7", "#### 18"])])
    assert minority.values["exact_match_strict"] == 0.0 and minority.answer["strict"] == "7"


def test_prompts_are_one_type_and_json_lists_become_tuples() -> None:
    record = SampleRecord("t", Sample("0", chat("hi")), [], [])
    again = SampleRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again.sample.input == chat("hi") and isinstance(again.sample.input, tuple)
    assert again.to_json() == record.to_json()


def test_jsonl_errors_name_the_real_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(DataError, match=r"x\.jsonl:3: not valid JSON"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"x\.jsonl:2: expected a JSON object"):
        read_jsonl(path)


def test_task_arg_parsing_rejects_what_it_cannot_place() -> None:
    with pytest.raises(UsageError, match="malformed --task-args"):
        taskargs.parse("gsm8k:", [], ["gsm8k"])
    assert taskargs.parse("lm_eval:x.yaml:num_fewshot=1", ["lm_eval:x.yaml.limit=2"], ["lm_eval:x.yaml"]) == {
        "lm_eval:x.yaml": {"num_fewshot": 1, "limit": 2}}


def test_gsm8k_majority_vote_run_on_a_real_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`--samples-per-task 3` on GSM8K: 3 sampled answers per problem, voted; results.json records what was used."""
    from evalsuite.cli import main
    from evalsuite.rundir import load_run

    data = write_gsm8k(tmp_path / "d")
    assert main(["run", "--model", str(tiny_model_dir), "--tasks", "gsm8k", "--limit", "2", "--samples-per-task", "3",
                 "--seed", "5", "-T", "gsm8k.max_tokens=8", "--data-dir", str(data), "--output-dir",
                 str(tmp_path / "r"), "--no-cache"]) == 0
    (run_dir,) = (tmp_path / "r").iterdir()
    run = load_run(run_dir)
    config = run.tasks["gsm8k"].config
    assert (config["samples_per_task"], config["temperature"], config["seed"], config["max_tokens"]) == (3, 0.2, 5, 8)
    for rec in run.records:
        assert len(rec.outputs[0].texts) == 3 and rec.requests[0].n == 3 and rec.requests[0].seed == 5
        assert sum(rec.score.answer["votes_flexible"].values()) == 3


def test_arguments_for_a_task_that_does_not_run_name_it() -> None:
    """A training config's `eval.task_args` for a task left out of `eval.tasks`: the message names that task.

    Catches the misleading "mix per-task entries with bare keys" message that this case gave."""
    from evalsuite.taskargs import by_task

    with pytest.raises(UsageError, match=r"task arguments for mmlu: not among this run's tasks \(xstest\)"):
        by_task(["xstest"], {"xstest": {"max_tokens": 24}, "mmlu": {"num_fewshot": 0}})
