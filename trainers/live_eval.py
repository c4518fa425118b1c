"""Scoring checkpoints with evalsuite's own runner, without reloading the model each time.

In-process (CPU default): the model being trained *is* the evaluation model — `LiveHFBackend` is
the HF backend built around it (`HFBackend.from_loaded`: adapter active, eval mode), so a checkpoint
costs its evaluation and nothing else; its fingerprint hashes the saved checkpoint on its own
engine tag (`hf-live`), so the call cache never serves one checkpoint's answers to another, nor
a fresh load's answers to the in-memory model. With `eval.backend: vllm` in process (CPU default for LoRA), one
warm vLLM engine with LoRA on serves the whole run and each checkpoint is an adapter on it
(`VLLMBackend.with_adapter`), so the engine start-up is paid once. Asynchronous (GPU default): a
child process runs `python -m evalsuite.trainers.live_eval JOB.json`, which loads the saved
checkpoint folder (the adapter unmerged) with a fresh backend per checkpoint while training goes on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalsuite.backends import models as model_store
from evalsuite.backends import Backend, require_backend
from evalsuite.backends.hf import HFBackend
from evalsuite.errors import UsageError

if TYPE_CHECKING:
    from evalsuite.backends.vllm import VLLMBackend
    from evalsuite.runlog import RunResults

IN_PROCESS_ARGS = ("batch_size", "max_batch_tokens", "max_length", "prefix_sharing", "min_shared_prefix", "prefix_reuse")


def LiveHFBackend(model: Any, tokenizer: Any, base: model_store.ResolvedModel, ckpt: Path, chat_template: str,  # noqa: N802
                  add_bos: bool, **model_args: Any) -> HFBackend:
    """The HF backend over the training model itself (`HFBackend.from_loaded`), for one checkpoint.

    Its cache identity is the saved checkpoint's weights on engine `hf-live`, never `hf`: the
    in-memory model runs in its training dtype (and, for QLoRA, on a 4-bit base), so it need not
    compute what `HFBackend` loading the checkpoint from disk computes, and neither may serve the
    other's answers. `eval.model_args` that only apply to loading a model (dtype, device) are refused.
    """
    unusable = sorted(set(model_args) - set(IN_PROCESS_ARGS))
    if unusable:
        raise UsageError(f"eval.model_args {unusable} cannot apply to the in-process scorer, which scores the training "
                         f"model as it is loaded: remove them (it takes {', '.join(IN_PROCESS_ARGS)}) or set "
                         "eval.asynchronous: on to load each checkpoint afresh")
    resolved = model_store.ResolvedModel(f"{base.name}+{ckpt.name}", base.path, adapter=str(ckpt))
    return HFBackend.from_loaded(model, tokenizer, resolved, engine="hf-live", chat_template=chat_template,
                                 add_bos_token=add_bos, **model_args)


def vllm_engine(base_path: str, chat_template: str, add_bos: bool, lora_rank: int, model_args: dict[str, Any]) -> VLLMBackend:
    """The run's one vLLM engine (LoRA on, no adapter): checkpoints are scored via `with_adapter`."""
    from evalsuite.backends.vllm import VLLMBackend, _lora_rank_bucket

    args = {"max_lora_rank": _lora_rank_bucket(lora_rank), "chat_template": chat_template, "add_bos_token": add_bos,
            **model_args, "enable_lora": True}
    return VLLMBackend(base_path, **args)


def score(ckpt: Path, tasks: list[str], out_dir: Path, limit: int | None, data_dir: str | None,
          task_args: dict[str, Any], backend: Backend | None = None, model_args: dict[str, Any] | None = None,
          seed: int = 1234, backend_name: str | None = None) -> tuple[dict[str, float], list[Path]]:
    """Run evalsuite's tasks on a checkpoint; returns ({"task/metric": value}, the eval run dirs).

    `task_args` is either one mapping for every task, or `{TASK: {...}}` per task (tasks with
    different arguments run as separate evalsuite runs, all on the same backend).
    """
    from evalsuite.runner import RunConfig, run_eval

    if backend is not None:
        require_backend(backend, "the checkpoint scorer's backend")
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for name in tasks:
        args = per_task_args(task_args, tasks, name)
        groups.setdefault(json.dumps(args, sort_keys=True), ([], args))[0].append(name)
    scores: dict[str, float] = {}
    runs = []
    for names, args in groups.values():
        cfg = RunConfig(tasks=names, model=str(ckpt), backend=backend_name, limit=limit, data_dir=data_dir, output_dir=str(out_dir),
                        task_args=args, model_args=dict(model_args or {}), seed=seed, show_table=False)
        log = run_eval(cfg, backend=backend)
        run_dir = log.path
        scores.update(flat_scores(log.results))
        runs.append(run_dir)
    return scores, runs


def per_task_args(task_args: dict[str, Any], tasks: list[str], name: str) -> dict[str, Any]:
    if task_args and all(k in tasks and isinstance(v, dict) for k, v in task_args.items()):
        return dict(task_args.get(name, {}))
    return dict(task_args)


def flat_scores(results: RunResults) -> dict[str, float]:
    """"task/metric" -> value of a run log's metrics (the checkpoint table's columns)."""
    return {f"{t}/{m}": v.value for t, sec in results.tasks.items() for m, v in sec.metrics.items() if v.value is not None}


# ---------------------------------------------------------------------------- asynchronous jobs
def start_job(ckpt: Path, job: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Score a saved checkpoint in a child process; its answer lands in <ckpt>/eval.json."""
    ckpt = ckpt.resolve()
    path = ckpt / "eval_job.json"
    path.write_text(json.dumps(job))
    log = (ckpt / "eval.log").open("wb")
    # cwd: the checkpoint, not the caller's. From a source checkout's root, `python -m evalsuite...`
    # would import ./evalsuite ahead of the installed package, which lacks evalsuite.trainers there.
    # env: without torchrun's worker variables, so the scorer runs alone instead of waiting for ranks to join it
    from evalsuite.distributed import single_process_env

    return subprocess.Popen([sys.executable, "-m", "evalsuite.trainers.live_eval", str(path)], stdout=log, stderr=log,
                            cwd=str(ckpt), env=single_process_env())


def read_job(ckpt: Path) -> dict[str, Any] | None:
    f = ckpt / "eval.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _main(job_file: str) -> int:
    job = json.loads(Path(job_file).read_text())
    ckpt = Path(job_file).parent
    scores, run_dirs = score(ckpt, job["tasks"], Path(job["out_dir"]), job.get("limit"), job.get("data_dir"),
                            job.get("task_args", {}), model_args={**job.get("model_args", {}),
                                                                  "chat_template": job["chat_template"]},
                            seed=job.get("seed", 1234), backend_name=job.get("backend"))
    (ckpt / "eval.json").write_text(json.dumps({"scores": scores, "eval_runs": [str(r) for r in run_dirs]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1]))
