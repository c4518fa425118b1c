"""The SFT recipe, torchtune style: setup -> train -> evaluate (every N steps) -> save.

One readable loop instead of a Trainer subclass: the loss is computed here (assistant tokens only,
token-weighted across gradient accumulation, logits only where a target exists) because that is
where packing bugs hide. Everything else is a library: transformers (model, schedules, packed
attention from position ids), peft (LoRA), accelerate (devices, mixed precision, FSDP/DeepSpeed
under `accelerate launch`), and evalsuite's own runner to score checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalsuite.trainers import checkpoint, contamination, data, live_eval, packing, report
from evalsuite.trainers.config import TrainConfig
from evalsuite.trainers.device import preflight
from evalsuite.trainers.loss import add_neftune, token_loss_sum
from evalsuite import rundir, runlog
from evalsuite.backends import models as model_store
from evalsuite.backends.identity import default_add_bos
from evalsuite.chat_template import CHATML_TEMPLATE
from evalsuite.errors import UsageError
from evalsuite.progress import console
from evalsuite.runlog import RunResults

__all__ = ["Recipe", "add_neftune", "preflight", "run", "token_loss_sum"]  # loss/device names re-exported


class Recipe:
    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.rows: list[dict[str, Any]] = []  # checkpoint rows of results.json's "training.steps"
        self.jobs: dict[int, Any] = {}  # asynchronous evaluations in flight, by step
        self.engine: Any = None  # in-process vLLM scoring: one warm engine, each checkpoint an adapter on it
        self.start_step, self.tokens_seen, self.wall_before = 0, 0, 0.0
        self.warned_metric = False  # best_metric named a task but not one of its metrics (said once)
        self.created, self.process = runlog.now(), runlog.this_process()  # who writes: a dead run reads interrupted

    # ================================================================ setup
    def setup(self) -> None:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        cfg, t = self.cfg, self.cfg.training
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        where = preflight(cfg)
        cuda = where.cuda
        self.acc = Accelerator(mixed_precision="bf16" if where.bf16 else "no", cpu=not cuda)
        console.print(f"device: {where.label} ({self.acc.num_processes} process(es))")
        if cfg.training.grad_accum % self.acc.num_processes:
            raise UsageError(f"training.grad_accum ({cfg.training.grad_accum}) must be a multiple of the number of "
                             f"processes ({self.acc.num_processes}): the global batch stays micro_batch_size x grad_accum, "
                             "split across the processes")
        # micro-batches per process per step: the same global batch and data order as one process
        self.accum = cfg.training.grad_accum // self.acc.num_processes
        set_seed(cfg.seed)
        self.base = model_store.resolve(cfg.model)
        if self.base.adapter:
            raise UsageError(f"{cfg.model} is an adapter: give its base model and train a new adapter")
        self._load_model(torch, cuda)
        self.template = self._template()
        self.tokenizer.chat_template = self.template  # saved with every checkpoint and the export
        self.add_bos = default_add_bos(getattr(self.model.config, "model_type", ""))  # the rule HFBackend uses
        self._build_data()
        self._build_optimizer()
        self._resume()
        self.model, self.optimizer = self.acc.prepare(self.model, self.optimizer)
        (self.run_dir / "chat_template.jinja").write_text(self.template)
        self.write_results("running")  # from the start: a run killed before its first checkpoint reads interrupted

    def _load_model(self, torch: Any, cuda: bool) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t, kwargs = self.cfg.training, {}
        if t.method == "qlora":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16)
            kwargs["device_map"] = {"": self.acc.device}  # bitsandbytes quantizes while loading onto the GPU
        self.tokenizer = AutoTokenizer.from_pretrained(self.base.path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(self.base.path, dtype=torch.float32, **kwargs)
        if t.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if t.method == "full":
            self.model = model
        else:
            from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

            if t.method == "qlora":
                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=t.gradient_checkpointing)
            lc = self.cfg.lora
            self.model = get_peft_model(model, LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                                          target_modules=lc.target_modules, task_type="CAUSAL_LM"))
        if t.neftune_alpha:
            add_neftune(self.model, t.neftune_alpha)
        self.model.train()
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        console.print(f"[bold]{self.base.name}[/bold] {t.method}: {trainable / 1e6:.2f}M of {total / 1e6:.1f}M parameters trainable")

    def _template(self) -> str:
        choice = self.cfg.data.chat_template
        if choice == "auto":
            return self.tokenizer.chat_template or CHATML_TEMPLATE
        if choice == "chatml":
            return CHATML_TEMPLATE
        return choice

    def _build_data(self) -> None:
        d = self.cfg.data
        pools, val, keys = [], [], []
        loaded = [data.load_dataset_spec(spec) for spec in d.datasets]
        if tasks := self.cfg.decontamination_tasks():  # default: the eval tasks themselves
            loaded = contamination.clean(loaded, tasks, self.cfg.eval.data_dir, d.decontaminate_action,
                                         self.run_dir, self.cfg.seed, strict=d.decontaminate is not True)
        trained = []
        for k, convs in enumerate(loaded):
            train_c, val_c = data.split(convs, d.val_fraction, d.val_max, self.cfg.seed + k)
            trained.append(train_c)
            pairs = [(c, e) for c in train_c if (e := self._example(c, k))]
            pools.append([e for _, e in pairs])
            val += [e for c in val_c if (e := self._example(c, k))]
            keys.append([float(len(e)) for _, e in pairs] if d.curriculum == "length" else
                        [c.difficulty or 0.0 for c, _ in pairs] if d.curriculum == "field" else None)
        self.pools, self.keys, self.val = pools, keys, val
        if d.fingerprints and self.acc.is_main_process:  # what `run --model CHECKPOINT` checks its samples against
            contamination.fingerprint(self.run_dir, trained, [s.name for s in d.datasets])
        self.weights = [s.weight for s in d.datasets]
        n_train = sum(len(p) for p in pools)
        per_step = self.cfg.training.micro_batch_size * self.cfg.training.grad_accum  # global: any number of processes
        one_pass = sum(1 for _ in packing.pack(iter([e for p in pools for e in p]), self.cfg.training.micro_batch_size,
                                               d.max_seq_len, d.packing))
        t = self.cfg.training
        self.max_steps = t.max_steps or max(1, math.ceil(t.epochs * one_pass * t.micro_batch_size / per_step))
        console.print(f"data: {n_train} training / {len(val)} validation conversations from {len(pools)} dataset(s); "
                      f"{one_pass} micro-batches per pass; {self.max_steps} steps")

    def _example(self, conv: data.Conversation, source: int) -> packing.Example | None:
        ids, trained = packing.tokenize(self.tokenizer, conv.messages, self.template, self.add_bos)
        return packing.make_example(ids, trained, self.cfg.data.max_seq_len, self.cfg.data.truncation, source)

    def micro_batches(self) -> Iterator[list[list[packing.Example]]]:
        """This process's micro-batches, in the seeded order every resume replays."""
        d, t = self.cfg.data, self.cfg.training
        stream = (ex for _, ex in data.stream(self.pools, self.weights, self.cfg.seed, d.curriculum, self.keys))
        for i, batch in enumerate(packing.pack(stream, t.micro_batch_size, d.max_seq_len, d.packing)):
            if i % self.acc.num_processes == self.acc.process_index:
                yield batch

    def _build_optimizer(self) -> None:
        import torch
        from transformers import get_scheduler

        t = self.cfg.training
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[t.schedule]
        warmup = math.ceil(t.warmup_ratio * self.max_steps)  # rounded up, as transformers' Trainer does
        self.scheduler = get_scheduler(name, self.optimizer, num_warmup_steps=warmup, num_training_steps=self.max_steps)

    def _resume(self) -> None:
        if (self.run_dir / rundir.RESULTS).is_file():  # a restarted run keeps the time it was first started
            self.created = rundir.load_results(self.run_dir).created or self.created
        ckpts = checkpoint.list_checkpoints(self.run_dir)
        if not ckpts:
            return
        step, path = ckpts[-1]
        checkpoint.load_weights(self.model, path, full=self.cfg.training.method == "full")
        state = checkpoint.load_state(path, self.optimizer, self.scheduler)
        self.start_step, self.tokens_seen, self.wall_before = step, state.get("tokens", 0), state.get("wall_s", 0.0)
        metrics = self.run_dir / "metrics.jsonl"
        kept = [r for r in report.read_metrics(metrics) if r["step"] <= step]
        rundir.atomic_write_text(metrics, "".join(json.dumps(r) + "\n" for r in kept))
        self.rows = [r for r in kept if r.get("kind") == "checkpoint"]
        console.print(f"[yellow]resuming[/yellow] from {path} (step {step} of {self.max_steps})")

    # ================================================================ train
    def train(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        batches = self.micro_batches()
        for _ in range(self.start_step * self.accum):  # replay the seeded order up to the checkpoint
            next(batches)
        columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                   TimeRemainingColumn())
        train_wall = 0.0  # training time only: checkpoint evaluations do not count against tokens/s
        window: list[tuple[float, int]] = []
        with Progress(*columns, console=console, disable=not self.acc.is_main_process) as bar:
            task = bar.add_task("train", total=self.max_steps, completed=self.start_step, stats="")
            if self.start_step == 0 and self.cfg.eval.at_start:
                bar.stop()
                self.evaluate(0, None, 0.0)  # a fresh LoRA adapter is the identity: these are the base's scores
                bar.start()
            for step in range(self.start_step + 1, self.max_steps + 1):
                t0 = time.perf_counter()
                micro = [next(batches) for _ in range(self.accum)]
                loss, n_tok = self._step(micro)
                train_wall += time.perf_counter() - t0
                self.tokens_seen += n_tok
                window.append((loss, n_tok))
                wall = self.wall_before + train_wall
                row = {"kind": "train", "step": step, "train_loss": loss, "lr": self.scheduler.get_last_lr()[0],
                       "tokens": self.tokens_seen, "tokens_per_s": self.tokens_seen / wall, "train_s": wall}
                self._log(row)
                bar.update(task, advance=1, stats=f"loss {loss:.4f}  lr {row['lr']:.2e}  {row['tokens_per_s']:.0f} tok/s")
                every = self.cfg.eval.every
                if step == self.max_steps or (every and step % every == 0):
                    mean = sum(a * b for a, b in window) / max(1, sum(b for _, b in window))
                    bar.stop()
                    self.evaluate(step, mean, wall)
                    bar.start()
                    window = []
        self._collect_jobs(wait=True)

    def _step(self, micro: list[list[list[packing.Example]]]) -> tuple[float, int]:
        """One optimizer step; the loss is averaged over every assistant token of the step."""
        total = self._global(sum(packing.n_targets(b) for b in micro))
        loss_sum = 0.0
        for i, batch in enumerate(micro):
            tensors = packing.collate(batch, self.tokenizer.pad_token_id)
            sync = i == len(micro) - 1
            with self.acc.no_sync(self.model) if not sync else contextlib.nullcontext():
                with self.acc.autocast():
                    s = token_loss_sum(self.model, tensors, self.acc.device)
                # DDP/FSDP average gradients across processes: scale back to a global token mean
                self.acc.backward(s * self.acc.num_processes / max(1, total))
            loss_sum += s.item()
        if self.cfg.training.max_grad_norm:
            self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.training.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self._global(loss_sum) / max(1, total), int(self._global(sum(packing.n_tokens(b) for b in micro)))

    def _global(self, value: float) -> float:
        if self.acc.num_processes == 1:
            return value
        import torch

        return float(self.acc.reduce(torch.tensor(float(value), device=self.acc.device), reduction="sum").item())

    # ================================================================ evaluate
    def validation_loss(self) -> float | None:
        import torch

        if not self.val:
            return None
        d, t = self.cfg.data, self.cfg.training
        self.model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for batch in packing.pack(iter(self.val), t.micro_batch_size, d.max_seq_len, d.packing):
                with self.acc.autocast():
                    total += token_loss_sum(self.model, packing.collate(batch, self.tokenizer.pad_token_id), self.acc.device).item()
                n += packing.n_targets(batch)
        self.model.train()
        return total / max(1, n)

    def evaluate(self, step: int, train_loss: float | None, wall: float) -> None:
        """Save the checkpoint, then validation loss and the eval tasks on it."""
        e = self.cfg.eval
        val_loss = self.validation_loss()
        self.acc.wait_for_everyone()
        state_dict = self.acc.get_state_dict(self.model) if self.acc.num_processes > 1 else None
        if not self.acc.is_main_process:
            return
        unwrapped = self.acc.unwrap_model(self.model)
        spec = self.cfg.model if self.cfg.model in model_store.ALIASES else self.base.path
        extra = {"tokens": self.tokens_seen, "wall_s": wall, "fingerprint": self.cfg.fingerprint()}
        ckpt = checkpoint.save(self.run_dir, step, unwrapped, self.tokenizer, self.optimizer, self.scheduler, extra,
                               spec, state_dict)
        row: dict[str, Any] = {"kind": "checkpoint", "step": step, "train_loss": train_loss, "val_loss": val_loss,
                               "scores": {}, "checkpoint": str(ckpt.relative_to(self.run_dir))}
        if e.tasks and self._asynchronous():
            self.jobs[step] = (live_eval.start_job(ckpt, self._job()), row)
            self._collect_jobs(wait=False)
            return
        if e.tasks:
            unwrapped.eval()
            try:
                backend = self._scoring_backend(unwrapped, ckpt)
                row["scores"], eval_dirs = live_eval.score(ckpt, e.tasks, self.run_dir / "evals", e.limit, e.data_dir,
                                                          e.task_args, backend=backend, seed=self.cfg.seed)
                row["eval_runs"] = [str(d.relative_to(self.run_dir)) for d in eval_dirs]
                contamination.attach(self.run_dir, eval_dirs)
            finally:
                unwrapped.train()
        self._record(row)

    def _scoring_backend(self, model: Any, ckpt: Path) -> Any:
        """In process: the training model itself (hf), or the saved adapter on the run's warm vLLM engine."""
        e = self.cfg.eval
        if e.backend == "hf":
            return live_eval.LiveHFBackend(model, self.tokenizer, self.base, ckpt, self.template, self.add_bos, **e.model_args)
        if self.engine is None:
            self.engine = live_eval.vllm_engine(self.base.path, self.template, self.add_bos, self.cfg.lora.r, e.model_args)
        return self.engine.with_adapter(str(ckpt))

    def _asynchronous(self) -> bool:
        """auto: a child process on GPU, or for backends that cannot score in process (vLLM needs a LoRA run)."""
        e = self.cfg.eval
        in_process = e.backend == "hf" or (e.backend == "vllm" and self.cfg.training.method != "full")
        # several processes: rank 0 scoring in process would leave the others blocked in the next step's collectives
        busy = self.acc.device.type == "cuda" or self.acc.num_processes > 1 or not in_process
        return e.asynchronous == "on" or (e.asynchronous == "auto" and busy)

    def _job(self) -> dict[str, Any]:
        e = self.cfg.eval
        return {"tasks": e.tasks, "out_dir": str((self.run_dir / "evals").resolve()), "limit": e.limit,
                "data_dir": _absolute_data_dir(e.data_dir), "task_args": e.task_args, "model_args": e.model_args, "chat_template": self.template,
                "backend": e.backend, "seed": self.cfg.seed}

    def _collect_jobs(self, wait: bool) -> None:
        for step, (proc, row) in sorted(self.jobs.items()):
            if wait:
                proc.wait()
            if proc.poll() is None:
                continue
            found = live_eval.read_job(self.run_dir / row["checkpoint"])
            row["scores"] = found["scores"] if found else {}
            row["eval_error"] = None if found else f"evaluation failed: see {row['checkpoint']}/eval.log"
            if found:
                row["eval_runs"] = [str(Path(d).resolve().relative_to(self.run_dir.resolve())) for d in found["eval_runs"]]
                contamination.attach(self.run_dir, [Path(d) for d in found["eval_runs"]])
            del self.jobs[step]
            self._record(row)

    def _record(self, row: dict[str, Any]) -> None:
        metric = self.cfg.eval.best_metric
        if row.get("scores") and "/" in metric and metric not in row["scores"] and not self.warned_metric:
            self.warned_metric = True
            console.print(f"[yellow]eval.best_metric '{metric}' is not among the scores "
                          f"({', '.join(sorted(row['scores']))}): no checkpoint can be marked best[/yellow]")
        self._log(row)
        if self.acc.is_main_process:
            console.print("checkpoint: " + report.checkpoint_line(row), soft_wrap=True, highlight=False)
        self.rows = sorted([r for r in self.rows if r["step"] != row["step"]] + [row], key=lambda r: r["step"])
        best = report.best(self.rows, self.cfg.eval.best_metric, self.cfg.eval.minimise)
        checkpoint.prune(self.run_dir, self.cfg.eval.keep_last, {best["step"]} if best else set())
        checkpoint.drop_old_optimizer_states(self.run_dir, self.cfg.training.keep_optimizer)
        self.write_results("running")

    def _log(self, row: dict[str, Any]) -> None:
        if self.acc.is_main_process:
            with (self.run_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")

    # ================================================================ save
    def write_results(self, status: runlog.Status, error: str | None = None) -> RunResults:
        """The training run's typed run log: checkpoints, best, loss curve, and the best checkpoint's tasks."""
        best = report.best(self.rows, self.cfg.eval.best_metric, self.cfg.eval.minimise)
        tasks: dict[str, runlog.TaskResult] = {}
        for d in (best or {}).get("eval_runs") or []:  # the best checkpoint's task sections, for every report
            tasks.update(rundir.load_results(self.run_dir / d).tasks)
        steps = [runlog.Checkpoint(**{k: r.get(k) for k in ("step", "train_loss", "val_loss", "scores", "checkpoint",
                                                            "eval_error") if r.get(k) is not None},
                                   eval_runs=r.get("eval_runs") or []) for r in self.rows]
        curve = [{"step": r["step"], "loss": r.get("train_loss"), "lr": r.get("lr")}
                 for r in report.read_metrics(self.run_dir / "metrics.jsonl") if r.get("kind") == "train"]
        name = f"{self.run_dir.name}@step-{best['step']}" if best else self.run_dir.name
        results = RunResults(
            kind="training", status=status, created=self.created, config=self.cfg.model_dump(mode="json"),
            process=self.process, error=error,
            environment=runlog.environment(), chat_template=self.template, tasks=tasks,
            model=runlog.ModelInfo(name=name, base=self.base.name, spec=self.cfg.model, backend=self.cfg.eval.backend,
                                   adapter=best and best["checkpoint"], fingerprint=self.cfg.fingerprint()),
            training=runlog.Training(steps=steps, best=runlog.Best(**{**best, "eval_runs": best.get("eval_runs") or []}) if best else None, max_steps=self.max_steps,
                                     tokens=self.tokens_seen, curve=curve))
        if self.acc.is_main_process:
            rundir.write_json(self.run_dir / rundir.RESULTS, results.to_json())
        return results

    def finish(self) -> RunResults:
        results = self.write_results("complete")
        best = results.training.best if results.training else None
        x = self.cfg.export
        if best and best.checkpoint and (x.merged or x.gguf):
            from evalsuite.trainers import export

            export.export(self.run_dir / best.checkpoint, self.run_dir / "export", gguf=x.gguf)
        report.plot(self.run_dir)
        return results


def run(cfg: TrainConfig, run_dir: Path) -> RunResults | None:
    """setup -> train (evaluating every N steps) -> save: the whole recipe."""
    random.seed(cfg.seed)
    recipe = Recipe(cfg, run_dir)
    recipe.setup()
    try:
        recipe.train()
    except BaseException as exc:  # the run log says the run stopped, and why (what was saved stays for resume)
        if recipe.acc.is_main_process:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            recipe.write_results(status, None if status == "interrupted" else f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if recipe.engine is not None:
            recipe.engine.close()
    return recipe.finish() if recipe.acc.is_main_process else None


def _absolute_data_dir(data_dir: str | None) -> str | None:
    """The eval data dir as an absolute path: the scoring child runs in the checkpoint folder."""
    import os

    chosen = data_dir or os.environ.get("EVALSUITE_DATA_DIR")
    return str(Path(chosen).expanduser().resolve()) if chosen else None
