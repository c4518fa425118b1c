"""Run tasks on a backend (or score given outputs) and write the run directory.

One pipeline for both: samples -> requests -> (cache | backend) -> outputs -> scores ->
aggregate -> run dir. `evalsuite score` only swaps the middle step for outputs read from a file
or an earlier run, so re-scoring never calls a model.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalsuite import outputs as outputs_file
from evalsuite import registry, rundir, runlog
from evalsuite.backends import Backend, check_backend_options
from evalsuite.cache import CallCache, NullCache
from evalsuite.errors import DataError, EvalsuiteError, JudgeHealthError, UsageError
from evalsuite.progress import TokenMeter, console, make_progress, score_table
from evalsuite.records import GenerateRequest, Output, Request, Sample, SampleRecord, finish_reasons, request_key
from evalsuite.rundir import RunLog
from evalsuite.runlog import ModelInfo, RunResults, TaskResult
from evalsuite.task import Task, TaskContext


TRUNCATION_WARNING = 0.10  # share of answers cut off at max_tokens above which a run says so


class Interrupted(EvalsuiteError):
    """Ctrl-C: what finished is kept in the run directory and the cache."""

    exit_code = 130


@dataclass
class RunConfig:
    tasks: list[str]
    model: str | None = None
    backend: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    task_args: dict[str, dict[str, Any]] = field(default_factory=dict)  # {task: {key: value}}
    limit: int | None = None
    data_dir: str | None = None
    output_dir: str = "runs"
    use_cache: bool = True
    cache_path: str | None = None
    seed: int = 1234
    samples_per_task: int = 1
    temperature: float | None = None
    allow_code_execution: bool = False
    allow_missing: bool = False  # `score --outputs`: score the samples that have outputs, record the rest as missing
    show_table: bool = True  # the score table at the end (the trainer prints one line per checkpoint instead)
    max_judge_errors: float = 0.2  # a task whose judge_error rate is higher fails the command (exit 1), run kept
    judge: str | None = None  # model spec of the judge (any backend), for LLM-as-judge tasks
    judge_args: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # run-wide task options (e.g. include_path)
    export: list[str] = field(default_factory=list)  # extra result formats written into the run dir

    def context(self) -> TaskContext:
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be a positive number of samples, got {self.limit}")
        return TaskContext.from_env(
            self.data_dir,
            limit=self.limit,
            seed=self.seed,
            samples_per_task=self.samples_per_task,
            temperature=self.temperature,
            allow_code_execution=self.allow_code_execution,
            options=dict(self.options),
        )


# ---------------------------------------------------------------------------- building blocks
def build_tasks(names: Sequence[str], task_args: dict[str, Any], ctx: TaskContext) -> dict[str, Task]:
    """Instantiate each task and check, before any model loads, that it can run.

    `task_args` is `{task name: {key: value}}` (a flat `{key: value}` only when one task runs); a
    key a task does not declare, a sampling flag given to a task that does not sample, or a task
    named twice is a `UsageError`. Plugins that fail to import are one warning line here.
    """
    from evalsuite import taskargs

    if not names:
        raise UsageError("no tasks given: pass --tasks NAME[,NAME...] (`evalsuite list` shows them)")
    doubled = sorted({n for n in names if list(names).count(n) > 1})
    if doubled:
        raise UsageError(f"--tasks names {', '.join(doubled)} more than once: name each task once")
    args = taskargs.by_task(names, task_args)
    broken = registry.newly_broken()
    if broken:
        from rich.markup import escape

        console.print(f"[yellow]warning:[/yellow] {len(broken)} installed plugin(s) fail to import and are unavailable: "
                      + escape("; ".join(f"{b.kind[:-1]} '{b.name}' from '{b.origin}'" for b in broken))
                      + " (`evalsuite list` says why)", soft_wrap=True)
    tasks: dict[str, Task] = {}
    for name in names:
        # `provider:sub` names (e.g. lm_eval:hellaswag) go to the provider's factory with `sub` first
        provider, sep, sub = name.partition(":")
        factory = registry.get("tasks", provider if sep else name)
        pos = (sub,) if sep else ()
        kwargs = taskargs.bind(name, factory, args.get(name, {}), ctx, positional=len(pos))
        try:
            task = factory(*pos, **kwargs)
        except TypeError as exc:
            raise UsageError(f"task '{name}' does not take task arguments {sorted(kwargs)}: {exc}") from exc
        if not isinstance(task, Task):
            raise UsageError(f"task plugin '{name}' returned {type(task).__name__}, not an evalsuite.task.Task")
        if task.requires_code_execution and not ctx.allow_code_execution:
            raise UsageError(
                f"task '{name}' executes model-written code: pass --allow-code-execution to run it "
                "(it runs in evalsuite's sandbox; read the README's sandbox section first)"
            )
        task.check_ready()
        task.setup(ctx)
        tasks[name] = task
    return tasks


def make_backend(model: str, backend: str | None, model_args: dict[str, Any]) -> Backend:
    """`--model vllm:PATH` / `openai:NAME` pick the backend by prefix; plain names use `--backend` (hf)."""
    prefix, sep, rest = model.partition(":")
    if sep and prefix in registry.names("backends") and not backend:
        backend, model = prefix, rest
    cls = registry.get("backends", backend or "hf")
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(model_args) - set(params))
        if unknown:
            valid = ", ".join(p for p in params if p != "model")
            raise UsageError(f"unknown --model-args {unknown} for backend '{backend or 'hf'}'; valid keys: {valid}")
    check_backend_options(cls, model, model_args)  # bad values fail here, before any weights load
    with console.status(f"loading model {model} ..."):
        return cls(model=model, **model_args)


class ModelClient:
    """A model reached through the cache, built on first use: what judges and generators call.

    `generate(requests)` returns one Output per request; cached calls never reach the model, so
    re-scoring a run re-asks the judge nothing it has answered before.
    """

    def __init__(self, model: str, model_args: dict[str, Any], cache: CallCache) -> None:
        self.spec, self.model_args, self.cache = model, model_args, cache
        self._backend: Any = None

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self._backend = make_backend(self.spec, None, self.model_args)
        return self._backend

    @property
    def name(self) -> str:
        return self.backend.model_name

    @property
    def fingerprint(self) -> str:
        return self.backend.fingerprint

    def generate(self, requests: list[Request], label: str = "judge") -> list[Output]:
        with make_progress() as progress:
            return serve(requests, self.backend, self.cache, self.fingerprint, progress, label)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


def serve(requests: list[Request], backend: Any, cache: CallCache, fingerprint: str, progress: Any, label: str) -> list[Output]:
    """Answer requests from the cache, sending only the misses (deduplicated) to the backend."""
    keys = [request_key(r, fingerprint) for r in requests]
    found = cache.get_many(list(dict.fromkeys(keys)))
    for out in found.values():
        out.extra["cached"] = True  # recorded in samples.jsonl: this answer was not recomputed
    misses: dict[str, Request] = {k: r for k, r in zip(keys, requests) if k not in found}
    unique = len(found) + len(misses)
    # cached work shows as cached ("20/20 (20 cached)"), not as a bar of the misses alone ("1/1")
    shown = f"{label} ({len(found)} cached)" if found else label
    bar = progress.add_task(shown, total=unique or None, completed=len(found), tokens=0)
    tokens = [0]
    for kind in ("loglikelihood", "generate"):
        batch_keys = [k for k, r in misses.items() if r.kind == kind]
        if not batch_keys:
            continue

        def done(i: int, out: Output, batch_keys: list[str] = batch_keys) -> None:
            found[batch_keys[i]] = out
            cache.put(batch_keys[i], out)
            tokens[0] += out.tokens_in + out.tokens_out
            progress.update(bar, advance=1, tokens=tokens[0])

        batch = [misses[k] for k in batch_keys]
        # generations also get a token bar, fed mid-batch by backends that call `done.on_tokens(n)`
        getattr(backend, kind)(batch, TokenMeter(progress, label, batch).wrap(done) if kind == "generate" else done)
    cache.flush()
    progress.update(bar, total=max(1, unique), completed=max(1, unique))
    lost = [k for k in misses if k not in found]
    for k in lost:  # a backend that silently skipped a request: record it, never drop it
        found[k] = Output(error="backend returned no output for this request")
    return [found[k] for k in keys]


def load_samples(name: str, task: Task, ctx: TaskContext) -> list[Sample]:
    samples = task.load(ctx)
    if ctx.limit:
        samples = samples[: ctx.limit]
    if not samples:
        raise DataError(f"task '{name}' loaded no samples")
    return samples


def execute_task(name: str, task: Task, ctx: TaskContext, answer: Any,
                 samples: list[Sample] | None = None) -> tuple[list[SampleRecord], dict[str, Any]]:
    """Samples -> requests -> outputs (via `answer`, round by round for multi-turn tasks)."""
    samples = samples if samples is not None else load_samples(name, task, ctx)
    records = [SampleRecord(name, s, [], []) for s in samples]
    pending = {i: task.requests(r.sample) for i, r in enumerate(records)}
    t0, stats = time.perf_counter(), {"requests": 0, "cached": 0, "tokens_in": 0, "tokens_out": 0, "generations": 0,
                                      "truncated": 0}
    round_no = 0
    while pending:
        flat = [(i, req) for i, reqs in pending.items() for req in reqs]
        outputs = answer([req for _, req in flat], f"{name}" + (f" turn {round_no + 1}" if round_no else ""))
        for (i, req), out in zip(flat, outputs):
            records[i].requests.append(req)
            records[i].outputs.append(out)
            stats["requests"] += 1
            stats["cached"] += bool(out.extra.get("cached"))
            stats["tokens_in"] += out.tokens_in
            stats["tokens_out"] += out.tokens_out
            if out.error and records[i].error is None:
                records[i].error = out.error
            if isinstance(req, GenerateRequest) and out.texts is not None:
                finish = finish_reasons(req, out)
                stats["generations"] += len(finish)
                stats["truncated"] += finish.count("length")
        pending = {i: nxt for i in pending if records[i].error is None and (nxt := task.next_requests(records[i].sample, records[i].outputs))}
        round_no += 1
    wall = time.perf_counter() - t0
    stats.update(wall_s=wall, requests_per_s=stats["requests"] / wall if wall else None,
                 tokens_per_s=(stats["tokens_in"] + stats["tokens_out"]) / wall if wall else None)
    return records, stats


def finish_task(name: str, task: Task, records: list[SampleRecord], ctx: TaskContext, timing: dict[str, Any],
                missing: Sequence[str] = ()) -> TaskResult:
    """Score, aggregate, and the task's typed section of results.json (directions from the task)."""
    ok = [r for r in records if r.error is None]
    with console.status(f"scoring {name} ({len(ok)} samples) ..."):
        for r, s in zip(ok, task.score_all(ok, ctx)):
            r.score = s
    summary = dict(task.aggregate(records))

    def typed(metrics: dict[str, Any]) -> dict[str, runlog.Metric]:
        return {m: runlog.metric(v.get("value"), v.get("stderr"), int(v.get("n") or 0), task.metric_higher_is_better(m))
                for m, v in metrics.items()}

    metrics, groups = typed(summary.pop("metrics", {})), {g: typed(ms) for g, ms in summary.pop("groups", {}).items()}
    cached = sum(bool(o.extra.get("cached")) for r in records for o in r.outputs)
    generations, truncated = int(timing.pop("generations", 0)), int(timing.pop("truncated", 0))
    if not generations:  # re-scored outputs: count what the stored outputs say
        finish = [x for r in records for o in r.outputs if isinstance(fr := o.extra.get("finish_reason"), list) for x in fr]
        generations, truncated = len(finish), finish.count("length")
    if generations and truncated / generations > TRUNCATION_WARNING:
        from rich.markup import escape

        console.print(f"[yellow]warning:[/yellow] {escape(name)}: {truncated} of {generations} answers hit max_tokens "
                      "and were cut off: raise the task's max_tokens (-T TASK.max_tokens=N) or read its scores with care")
    return TaskResult(version=str(task.version), n=len(records), group_by=task.group_by, metrics=metrics, groups=groups,
                      config=task.config(), errors=len(records) - len(ok), missing=list(missing), cached=cached,
                      generations=generations, truncated=truncated, timing=timing, **summary)


# ---------------------------------------------------------------------------- the two entry points
def run_eval(cfg: RunConfig, backend: Backend | None = None) -> RunLog:
    """`evalsuite run`: evaluate a model on tasks; returns the run log (typed results, records, directory)."""
    if not cfg.model and backend is None:
        raise UsageError("no model given: pass --model (e.g. --model smollm2-135m)")
    ctx = cfg.context()
    _check_export(cfg)
    tasks = build_tasks(cfg.tasks, cfg.task_args, ctx)
    _check_judge(tasks, cfg)
    with console.status("loading data ..."):  # missing data fails here, before a model loads
        samples = {name: load_samples(name, task, ctx) for name, task in tasks.items()}
    cache = _cache(cfg)  # a bad cache path fails before the model loads
    out = rundir.new_run_dir(cfg.output_dir, cfg.model or "model", cfg.tasks)
    try:
        backend = backend or make_backend(cfg.model, cfg.backend, cfg.model_args)  # type: ignore[arg-type]
    except BaseException:
        out.rmdir()  # still empty: no run happened
        cache.close()
        raise
    ctx.judge = ModelClient(cfg.judge, cfg.judge_args, cache) if cfg.judge else None
    model_info = ModelInfo(name=backend.model_name, spec=cfg.model, fingerprint=backend.fingerprint, **backend.info())
    return _run(tasks, ctx, cfg, out, model_info,
                lambda progress: lambda reqs, label: serve(reqs, backend, cache, backend.fingerprint, progress, label),
                cleanup=cache.close, samples=samples)


def _check_judge(tasks: dict[str, Task], cfg: RunConfig) -> None:
    """A task that needs a judge fails before any model loads when none is given."""
    needing = [name for name, task in tasks.items() if getattr(task, "requires_judge", False)]
    if needing and not cfg.judge:
        raise UsageError(f"task(s) {', '.join(needing)} need a judge model: pass --judge MODEL "
                         "(any --model spec, e.g. openai:gpt-4o or smollm2-135m)")


def _check_export(cfg: RunConfig) -> None:
    if cfg.export:
        from evalsuite.export import check_formats

        check_formats(cfg.export)  # an unknown format fails now, not after the run


def _cache(cfg: RunConfig) -> CallCache:
    return NullCache() if not cfg.use_cache else CallCache(Path(cfg.cache_path) if cfg.cache_path else None)


def score_outputs(cfg: RunConfig, outputs: str | None = None, run_dir: str | None = None) -> RunLog:
    """`evalsuite score`: score outputs made elsewhere (a JSONL file) or re-score a run dir."""
    if bool(outputs) == bool(run_dir):
        raise UsageError("pass exactly one of --outputs FILE or --run-dir DIR")
    ctx = cfg.context()
    tasks = build_tasks(cfg.tasks, cfg.task_args, ctx)
    missing: dict[str, list[str]] = {}
    if run_dir:
        log = rundir.load_run(run_dir)
        model_info = log.results.model.model_copy(update={"rescored_from": str(Path(run_dir).resolve())})
        stored = {name: log.records_for(name) for name in tasks}
        missing = {name: list(log.tasks[name].missing) for name in tasks if name in log.tasks}  # still missing
        absent = [n for n, recs in stored.items() if not recs]
        if absent:
            raise UsageError(f"{run_dir} has no samples for task(s) {absent}")
    else:
        path = Path(outputs)  # type: ignore[arg-type]
        rows = outputs_file.read_rows(path)
        model_info = ModelInfo(name=path.name, backend="outputs-file", outputs=str(path.resolve()))
        stored = {}
        for name, task in tasks.items():
            stored[name], missing[name] = outputs_file.records_from_outputs(name, task, rows, ctx, path)
        outputs_file.check_missing(missing, cfg.allow_missing, path)
    # the run dir is made only once the inputs are known to be good: bad input leaves no empty run behind
    out = rundir.new_run_dir(cfg.output_dir, Path(outputs or run_dir).stem, cfg.tasks)  # type: ignore[arg-type]
    cache = _cache(cfg)
    ctx.judge = ModelClient(cfg.judge, cfg.judge_args, cache) if cfg.judge else None

    def answer_factory(progress: Any) -> Any:
        raise AssertionError("score mode never calls a model")  # pragma: no cover

    return _run(tasks, ctx, cfg, out, model_info, answer_factory, stored=stored, cleanup=cache.close, missing=missing)


def _run(tasks: dict[str, Task], ctx: TaskContext, cfg: RunConfig, out: Path, model_info: ModelInfo,
         answer_factory: Any, stored: dict[str, list[SampleRecord]] | None = None, cleanup: Any = None,
         samples: dict[str, list[Sample]] | None = None, missing: dict[str, list[str]] | None = None) -> RunLog:
    config = asdict(cfg)
    config["data_dir"] = str(ctx.data_dir) if ctx.data_dir else None  # also when it came from EVALSUITE_DATA_DIR
    writer = rundir.RunWriter(out, RunResults(kind="eval", model=model_info, config=config,
                                              environment=runlog.environment(), created=runlog.now()))
    try:
        with make_progress() as progress:
            answer = None if stored is not None else answer_factory(progress)
            for name, task in tasks.items():
                if stored is not None:
                    records, timing = stored[name], {"wall_s": 0.0}
                else:
                    records, timing = execute_task(name, task, ctx, answer, (samples or {}).get(name))
                writer.add_task(name, finish_task(name, task, records, ctx, timing, (missing or {}).get(name, ())), records)
        log = writer.finish("complete")
        unhealthy = judge_health(log, cfg.max_judge_errors)
        if unhealthy:  # the numbers are kept, and the run says why they are not to be trusted
            log = writer.finish("complete", f"judge health: {unhealthy}")
        if cfg.export:
            from evalsuite.export import export_run

            export_run(out, cfg.export)
    except KeyboardInterrupt:
        writer.finish("interrupted")
        raise Interrupted(f"interrupted: finished tasks are in {out}; model calls are cached, re-run to resume") from None
    except BaseException as exc:  # anything else (a task bug, out of memory): the run says it failed, and why
        if writer.results.status == "running":
            writer.finish("failed", str(exc) if isinstance(exc, EvalsuiteError) else f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if cleanup:
            cleanup()
    if cfg.show_table:
        console.print(score_table(log.results, title=f"{model_info.name}  →  {out}"))
    if unhealthy:
        raise JudgeHealthError(unhealthy + f"; the run is kept in {out} (pass --max-judge-errors to accept more)")
    return log


def judge_health(log: RunLog, threshold: float) -> str | None:
    """One line for the first task whose judge errors exceed `threshold`, with its first raw verdict."""
    for name, task in log.tasks.items():
        rate = task.metrics.get("judge_error")
        if rate is None or rate.value is None or rate.value <= threshold:
            continue
        failed = next((r for r in log.records_for(name) if r.score and r.score.values.get("judge_error")), None)
        raw = ""
        if failed is not None and failed.score is not None:
            texts = [v for k, v in failed.score.explanation.items() if "verdict" in k or k.endswith("error")]
            raw = f"; first failed verdict: {str(texts[0])[:160]!r}" if texts else ""
        return (f"task {name}: {rate.value:.0%} of judge verdicts were errors (n={rate.n}), over the "
                f"{threshold:.0%} allowed{raw}")
    return None
