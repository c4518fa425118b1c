"""Scoring checkpoints with evalsuite's own runner, without reloading the model each time.

In-process (CPU default): the model being trained *is* the evaluation model — `LiveHFBackend` is
the HF backend built around it (adapter active, eval mode), so a checkpoint costs its evaluation
and nothing else; its fingerprint is the saved checkpoint's, so the call cache never serves one
checkpoint's answers to another. With `eval.backend: vllm` in process (CPU default for LoRA), one
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
from typing import Any

from evalsuite.backends import models as model_store
from evalsuite.backends.hf import HFBackend


class LiveHFBackend(HFBackend):
    """The HF backend over an already loaded (training) model. Mirrors HFBackend.__init__'s fields."""

    def __init__(self, model: Any, tokenizer: Any, base: model_store.ResolvedModel, ckpt: Path,
                 chat_template: str, add_bos: bool, batch_size: int | str = "auto", max_batch_tokens: int | None = None,
                 max_length: int | None = None, prefix_sharing: bool = True, min_shared_prefix: int = 32) -> None:
        import torch

        self._torch = torch
        self.model, self.tokenizer = model, tokenizer
        self.device = str(next(model.parameters()).device)
        self.dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.chat_template = chat_template
        self.add_bos_token = add_bos
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
        self.batch_size = None if batch_size == "auto" else int(batch_size)
        self.max_batch_tokens = max_batch_tokens or (16384 if self.device.startswith("cuda") else 2048)
        self.prefix_sharing, self.min_shared_prefix = prefix_sharing, min_shared_prefix
        self.model_name = f"{base.name}+{ckpt.name}"
        self._resolved = model_store.ResolvedModel(self.model_name, base.path, adapter=str(ckpt))
        self.fingerprint = model_store.fingerprint(base.path, str(ckpt), extra=f"{self.dtype}|{chat_template}|bos={add_bos}|turn_end")

    def close(self) -> None:  # the trainer still needs its model
        pass


def vllm_engine(base_path: str, chat_template: str, add_bos: bool, lora_rank: int, model_args: dict[str, Any]) -> Any:
    """The run's one vLLM engine (LoRA on, no adapter): checkpoints are scored via `with_adapter`."""
    from evalsuite.backends.vllm import VLLMBackend, _lora_rank_bucket

    args = {"max_lora_rank": _lora_rank_bucket(lora_rank), "chat_template": chat_template, "add_bos_token": add_bos,
            **model_args, "enable_lora": True}
    return VLLMBackend(base_path, **args)


def score(ckpt: Path, tasks: list[str], out_dir: Path, limit: int | None, data_dir: str | None,
          task_args: dict[str, Any], backend: Any | None = None, model_args: dict[str, Any] | None = None,
          seed: int = 1234, backend_name: str | None = None) -> tuple[dict[str, float], list[Path]]:
    """Run evalsuite's tasks on a checkpoint; returns ({"task/metric": value}, the eval run dirs).

    `task_args` is either one mapping for every task, or `{TASK: {...}}` per task (tasks with
    different arguments run as separate evalsuite runs, all on the same backend).
    """
    from evalsuite.runner import RunConfig, run_eval

    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for name in tasks:
        args = per_task_args(task_args, tasks, name)
        groups.setdefault(json.dumps(args, sort_keys=True), ([], args))[0].append(name)
    scores: dict[str, float] = {}
    runs = []
    for names, args in groups.values():
        cfg = RunConfig(tasks=names, model=str(ckpt), backend=backend_name, limit=limit, data_dir=data_dir, output_dir=str(out_dir),
                        task_args=args, model_args=dict(model_args or {}), seed=seed, show_table=False)
        run_dir = run_eval(cfg, backend=backend).path
        scores.update(flat_scores(json.loads((run_dir / "results.json").read_text())))
        runs.append(run_dir)
    return scores, runs


def per_task_args(task_args: dict[str, Any], tasks: list[str], name: str) -> dict[str, Any]:
    if task_args and all(k in tasks and isinstance(v, dict) for k, v in task_args.items()):
        return dict(task_args.get(name, {}))
    return dict(task_args)


def flat_scores(results: dict[str, Any]) -> dict[str, float]:
    return {f"{t}/{m}": v["value"] for t, sec in results.get("tasks", {}).items()
            for m, v in sec.get("metrics", {}).items() if isinstance(v, dict) and v.get("value") is not None}


# ---------------------------------------------------------------------------- asynchronous jobs
def start_job(ckpt: Path, job: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Score a saved checkpoint in a child process; its answer lands in <ckpt>/eval.json."""
    ckpt = ckpt.resolve()
    path = ckpt / "eval_job.json"
    path.write_text(json.dumps(job))
    log = (ckpt / "eval.log").open("wb")
    # cwd: the checkpoint, not the caller's. From a source checkout's root, `python -m evalsuite...`
    # would import ./evalsuite ahead of the installed package, which lacks evalsuite.trainers there.
    return subprocess.Popen([sys.executable, "-m", "evalsuite.trainers.live_eval", str(path)], stdout=log, stderr=log,
                            cwd=str(ckpt))


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
