"""The run pipeline end to end on a tiny real model: run dir, cache, score mode, re-scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalsuite.cache import CallCache
from evalsuite.records import SampleRecord
from evalsuite.rundir import load_run
from evalsuite.runner import RunConfig, run_eval, score_outputs

from .conftest import write_gsm8k, write_mmlu


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return write_mmlu(write_gsm8k(tmp_path / "data"))


def _run(model: Path, data_dir: Path, out: Path, **kw) -> Path:
    cfg = RunConfig(tasks=["gsm8k", "mmlu"], model=str(model), data_dir=str(data_dir), output_dir=str(out),
                    model_args={"dtype": "float32"}, **kw)
    return run_eval(cfg)


def test_run_writes_complete_run_dir(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    returned = _run(tiny_model_dir, data_dir, tmp_path / "runs", task_args={})
    run = load_run(returned)
    assert returned.results == run.results, "run_eval returns the typed log it wrote"
    assert run.results.status == "complete" and run.results.kind == "eval"
    assert run.results.model.fingerprint
    assert "torch" in run.results.environment.versions and "evalsuite" in run.results.environment.plugins
    assert run.results.process is not None and run.results.process.alive() is True  # this very process
    gsm, mmlu = run.tasks["gsm8k"], run.tasks["mmlu"]
    assert gsm.n == 6 and mmlu.n == 6
    assert set(gsm.metrics) == {"exact_match_strict", "exact_match_flexible"}
    assert {"acc", "acc_macro"} <= set(mmlu.metrics) and set(mmlu.groups) == {"anatomy", "astronomy"}
    assert all(m.higher_is_better for m in mmlu.metrics.values())
    assert mmlu.timing["requests"] == 24
    records = run.records_for("mmlu")
    assert len(records) == 6 and all(len(r.outputs) == 4 and r.score.answer in "ABCD" for r in records)
    # the mean in results.json is the mean of the per-sample scores on disk
    acc = sum(r.score.values["acc"] for r in records) / len(records)
    assert mmlu.metrics["acc"].value == pytest.approx(acc)
    df = run.to_dataframe()
    assert len(df) == 12 and "score.acc" in df.columns


def test_second_run_is_served_from_cache(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    first = load_run(_run(tiny_model_dir, data_dir, tmp_path / "a"))
    cache_file = tmp_path / "cache.sqlite"
    # a fresh cache file, then the same run twice with different batch sizes
    a = load_run(_run(tiny_model_dir, data_dir, tmp_path / "b", cache_path=str(cache_file)))
    cache = CallCache(cache_file)
    n_rows = cache._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    cache.close()
    assert n_rows == 6 + 6 * 4
    cfg = RunConfig(tasks=["gsm8k", "mmlu"], model=str(tiny_model_dir), data_dir=str(data_dir),
                    output_dir=str(tmp_path / "c"), cache_path=str(cache_file), model_args={"batch_size": 1})
    from evalsuite import runner

    calls = []
    real_serve = runner.serve

    def counting_serve(requests, backend, cache, fp, progress, label):
        before = cache.misses
        outs = real_serve(requests, backend, cache, fp, progress, label)
        calls.append(cache.misses - before)
        return outs

    runner.serve = counting_serve
    try:
        b = load_run(run_eval(cfg))
    finally:
        runner.serve = real_serve
    assert calls == [0, 0], "batch size is not part of the cache key"
    for x, y, z in zip(first.records, a.records, b.records):
        assert x.outputs[0].texts == y.outputs[0].texts == z.outputs[0].texts
        assert x.score.values == y.score.values == z.score.values


def test_score_outputs_file_and_rescore_run_dir(data_dir: Path, tmp_path: Path) -> None:
    outputs = tmp_path / "outs.jsonl"
    answers = ["The answer is 1.\n#### 1", "I think 3", "#### 99", "nothing"]
    outputs.write_text("".join(json.dumps({"id": str(i), "output": a}) + "\n" for i, a in enumerate(answers)))
    cfg = RunConfig(tasks=["gsm8k"], data_dir=str(data_dir), output_dir=str(tmp_path / "runs"), limit=4)
    run = load_run(score_outputs(cfg, outputs=str(outputs)))
    m = run.tasks["gsm8k"].metrics
    assert run.tasks["gsm8k"].n == 4
    assert m["exact_match_strict"].value == pytest.approx(1 / 4)  # only "#### 1" is strict-correct
    assert m["exact_match_flexible"].value == pytest.approx(2 / 4)  # "1." and "3"
    # re-scoring that run dir needs no data dir and gives the same numbers
    again = load_run(score_outputs(RunConfig(tasks=["gsm8k"], output_dir=str(tmp_path / "re")), run_dir=str(run.path)))
    assert again.tasks["gsm8k"].metrics == m
    assert [r.score.values for r in again.records] == [r.score.values for r in run.records]


def test_record_json_roundtrip(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    run = load_run(_run(tiny_model_dir, data_dir, tmp_path / "runs"))
    for r in run.records:
        again = SampleRecord.from_json(json.loads(json.dumps(r.to_json())))
        assert again.to_json() == r.to_json()


def test_backend_errors_are_recorded_not_scored(data_dir: Path, tmp_path: Path) -> None:
    """A backend that fails a request: the sample carries the error and is left out of metrics."""
    from evalsuite.records import Output

    class FlakyBackend:
        model_name, fingerprint = "flaky", "flaky-1"

        def generate(self, requests, done):
            for i, _ in enumerate(requests):
                done(i, Output(error="HTTP 500") if i % 2 else Output(texts=["#### 1"]))

        def loglikelihood(self, requests, done):
            raise AssertionError("not used")

        def info(self):
            return {"backend": "flaky"}

        def close(self):
            pass

    cfg = RunConfig(tasks=["gsm8k"], model="flaky", data_dir=str(data_dir), output_dir=str(tmp_path / "r"))
    run = load_run(run_eval(cfg, backend=FlakyBackend()))
    task = run.tasks["gsm8k"]
    assert task.errors == 3 and task.metrics["exact_match_strict"].n == 3
    assert sum(r.error == "HTTP 500" for r in run.records) == 3


def test_score_outputs_counts_missing_and_refuses_duplicates(data_dir: Path, tmp_path: Path) -> None:
    """`score --outputs`: ids without output fail the command unless --allow-missing, and are then recorded
    and shown; two answers for one id are refused (the score would depend on line order).

    Catches: missing samples silently dropped (2 of 1,319 scored as "gsm8k"), duplicates scored first-wins."""
    from evalsuite.errors import UsageError

    outputs = tmp_path / "outs.jsonl"
    outputs.write_text("".join(json.dumps({"id": str(i), "output": "#### 1"}) + "\n" for i in (0, 1)))
    cfg = RunConfig(tasks=["gsm8k"], data_dir=str(data_dir), output_dir=str(tmp_path / "runs"))
    with pytest.raises(UsageError, match=r"4 sample\(s\) of task 'gsm8k' have no output \(2, 3, 4, 5\).*--allow-missing"):
        score_outputs(cfg, outputs=str(outputs))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "no run dir for bad input"
    cfg.allow_missing = True
    run = score_outputs(cfg, outputs=str(outputs))
    assert run.tasks["gsm8k"].missing == ["2", "3", "4", "5"] and run.tasks["gsm8k"].n == 2
    assert load_run(run).tasks["gsm8k"].missing == ["2", "3", "4", "5"]
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text("".join(json.dumps({"id": i, "output": o}) + "\n" for i, o in (("0", "#### 1"), ("0", "#### 2"))))
    with pytest.raises(UsageError, match=r"1 sample id\(s\) of task 'gsm8k' have more outputs than --samples-per-task 1 \(0\)"):
        score_outputs(cfg, outputs=str(doubled))
    array = tmp_path / "array.jsonl"
    array.write_text('{"id": "0", "output": "#### 1"}\n["0", "x"]\n')
    with pytest.raises(UsageError, match=r"array.jsonl:2: expected a JSON object"):
        score_outputs(cfg, outputs=str(array))
    not_text = tmp_path / "not_text.jsonl"
    not_text.write_text('{"id": "0", "output": 7}\n')
    with pytest.raises(UsageError, match=r"the output for id '0' is not a string"):
        score_outputs(cfg, outputs=str(not_text))


def test_data_dir_from_the_environment_is_recorded(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """results.json records the data dir a run used, also when it came from EVALSUITE_DATA_DIR (it was null)."""
    monkeypatch.setenv("EVALSUITE_DATA_DIR", str(data_dir))
    outputs = tmp_path / "outs.jsonl"
    outputs.write_text("".join(json.dumps({"id": str(i), "output": "#### 1"}) + "\n" for i in range(6)))
    run = score_outputs(RunConfig(tasks=["gsm8k"], output_dir=str(tmp_path / "runs")), outputs=str(outputs))
    assert load_run(run).results.config["data_dir"] == str(data_dir.resolve())


def test_a_killed_run_reads_as_interrupted(data_dir: Path, tmp_path: Path) -> None:
    """A run whose writer died reads as `interrupted` (pid + host in results.json), not `running` forever."""
    import subprocess

    from evalsuite import runlog
    from evalsuite.runlog import Process

    outputs = tmp_path / "outs.jsonl"
    outputs.write_text("".join(json.dumps({"id": str(i), "output": "#### 1"}) + "\n" for i in range(6)))
    run = score_outputs(RunConfig(tasks=["gsm8k"], data_dir=str(data_dir), output_dir=str(tmp_path / "runs")),
                        outputs=str(outputs))
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process now
    results = run.results.model_copy(update={"status": "running", "process": Process(
        pid=dead.pid, host=runlog.this_process().host, started=0.0)})
    assert results.state() == "interrupted"
    live = results.model_copy(update={"process": runlog.this_process()})
    assert live.state() == "running"


def test_truncation_is_counted_and_said(tiny_model_dir: Path, data_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    """Answers cut off at max_tokens are counted per task, flagged per generation in samples.jsonl, shown in the
    table and warned about over 10%. Catches: truncation invisible (17 of 20 IFEval answers hit max_tokens and
    nothing said so)."""
    cfg = RunConfig(tasks=["gsm8k"], model=str(tiny_model_dir), data_dir=str(data_dir), output_dir=str(tmp_path / "r"),
                    task_args={"gsm8k": {"max_tokens": 3}}, use_cache=False)
    run = run_eval(cfg)
    task = run.tasks["gsm8k"]
    assert task.generations == 6 and task.truncated == 6, "a random 2-layer model never ends its turn in 3 tokens"
    assert all(o.extra["finish_reason"] == ["length"] for r in load_run(run).records for o in r.outputs)
    err = capsys.readouterr().err
    assert "gsm8k: 6 of 6 answers hit max_tokens" in err and "cut off at max_tokens" in err


def test_a_crash_marks_the_run_failed(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception (a task bug, out of memory) leaves results.json `failed` with the error, not `running`.
    Catches: only KeyboardInterrupt and evalsuite's own errors being recorded."""
    from evalsuite.rundir import load_results
    from evalsuite.tasks.gsm8k import GSM8K

    def broken(self, sample, outputs):
        raise ValueError("a bug in the scorer")

    monkeypatch.setattr(GSM8K, "score", broken)
    outputs = tmp_path / "outs.jsonl"
    outputs.write_text("".join(json.dumps({"id": str(i), "output": "#### 1"}) + "\n" for i in range(6)))
    with pytest.raises(ValueError):
        score_outputs(RunConfig(tasks=["gsm8k"], data_dir=str(data_dir), output_dir=str(tmp_path / "r")), outputs=str(outputs))
    (run,) = (tmp_path / "r").iterdir()
    results = load_results(run)
    assert results.status == "failed" and results.error == "ValueError: a bug in the scorer"


def test_a_cached_rerun_shows_its_work_as_cached(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """The progress bar of a fully cached re-run says "6/6 (6 cached)", not "1/1". Catches: the bar counting only
    the requests sent to the model."""
    from rich.console import Console

    from evalsuite import progress as progress_module

    cfg = RunConfig(tasks=["gsm8k"], model=str(tiny_model_dir), data_dir=str(data_dir), output_dir=str(tmp_path / "r"),
                    task_args={"gsm8k": {"max_tokens": 3}}, cache_path=str(tmp_path / "c.sqlite"))
    run_eval(cfg)
    recorded = Console(record=True, width=200, force_terminal=False)
    real = progress_module.console
    progress_module.console = recorded
    try:
        import evalsuite.runner as runner_module

        runner_module.console = recorded
        run_eval(cfg)
    finally:
        progress_module.console = real
        runner_module.console = real
    text = recorded.export_text()
    assert "gsm8k (6 cached)" in text and "6/6" in text, text[-1500:]
