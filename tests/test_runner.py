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
    run = load_run(_run(tiny_model_dir, data_dir, tmp_path / "runs", task_args={}))
    assert run.results["status"] == "complete"
    assert run.results["model"]["fingerprint"]
    assert "torch" in run.results["versions"]
    gsm, mmlu = run.tasks["gsm8k"], run.tasks["mmlu"]
    assert gsm["n"] == 6 and mmlu["n"] == 6
    assert set(gsm["metrics"]) == {"exact_match_strict", "exact_match_flexible"}
    assert {"acc", "acc_macro"} <= set(mmlu["metrics"]) and set(mmlu["groups"]) == {"anatomy", "astronomy"}
    assert mmlu["timing"]["requests"] == 24
    records = run.records_for("mmlu")
    assert len(records) == 6 and all(len(r.outputs) == 4 and r.score.answer in "ABCD" for r in records)
    # the mean in results.json is the mean of the per-sample scores on disk
    acc = sum(r.score.values["acc"] for r in records) / len(records)
    assert mmlu["metrics"]["acc"]["value"] == pytest.approx(acc)
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
    cfg = RunConfig(tasks=["gsm8k"], data_dir=str(data_dir), output_dir=str(tmp_path / "runs"))
    run = load_run(score_outputs(cfg, outputs=str(outputs)))
    m = run.tasks["gsm8k"]["metrics"]
    assert run.tasks["gsm8k"]["n"] == 4
    assert m["exact_match_strict"]["value"] == pytest.approx(1 / 4)  # only "#### 1" is strict-correct
    assert m["exact_match_flexible"]["value"] == pytest.approx(2 / 4)  # "1." and "3"
    # re-scoring that run dir needs no data dir and gives the same numbers
    again = load_run(score_outputs(RunConfig(tasks=["gsm8k"], output_dir=str(tmp_path / "re")), run_dir=str(run.path)))
    assert again.tasks["gsm8k"]["metrics"] == m
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
    assert task["errors"] == 3 and task["metrics"]["exact_match_strict"]["n"] == 3
    assert sum(r.error == "HTTP 500" for r in run.records) == 3
