"""Run lm-evaluation-harness tasks with evalsuite: `--tasks lm_eval:NAME` (`--include-path DIR` for your YAML).

lm-eval builds the task (its `TaskManager`, YAML, prompts, few-shot sampler) and its `Instance`s
become evalsuite requests, so they get evalsuite's backends, cache, resume and per-sample log.
Scoring is lm-eval's own: responses go back into the instances, lm-eval's filters run, then its
`process_results` per document and its `aggregation()` functions (and stderr) per metric, so the
numbers are lm-eval's. Request mapping:
- `loglikelihood` / `multiple_choice` -> `LoglikelihoodRequest(context, continuation)` -> (logprob, is_greedy);
- `generate_until` -> `GenerateRequest` (`until` -> stop, `max_gen_toks` -> max_tokens, temperature,
  `repeats` -> n) -> text;
- `loglikelihood_rolling` -> `LoglikelihoodRequest("", text)`: one window from the EOT token, equal to
  lm-eval's rolling windows while the text fits the model's context (longer texts are truncated).
Per-sample metric values are in `Score.values` (key "metric", or "metric,filter" for filters other
than "none"); values that are not numbers (corpus-level items such as BLEU's) in `Score.answer["items"]`.
A group (e.g. `lm_eval:mmlu`) runs all its leaf tasks; each gets its own metrics under `groups`,
and the overall metric is lm-eval's size-weighted mean. Chat templates are not applied.
"""

from __future__ import annotations

import functools
import math
import os
import socket
from collections.abc import Sequence
from typing import Any

from evalsuite.errors import DataError, UsageError
from evalsuite.records import (
    GenerateRequest,
    LoglikelihoodRequest,
    Output,
    Request,
    Sample,
    SampleRecord,
    Score,
)
from evalsuite.task import Task, TaskContext

BOOTSTRAP_ITERS = 1000  # stderr of non-mean metrics (lm-eval's default is 100000: minutes on big tasks)


def hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _go_offline_if_unreachable() -> bool:
    """Offline, `datasets` retries the hub for ~30 s per task before failing: switch it to offline mode.

    Cached hub data and local files (`dataset_path: json`) still load; a missing hub dataset fails at once.
    Returns whether the hub is out of reach.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return True
    if hub_reachable():
        return False
    import datasets.config
    import huggingface_hub.constants

    datasets.config.HF_HUB_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    return True


@functools.lru_cache(maxsize=8)
def _manager(include: str | None, defaults: bool) -> Any:
    """lm-eval's TaskManager (indexing its ~15k built-in task names takes 5-20 s: done once per process)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include, include_defaults=defaults)


class LMEvalTask(Task):
    """Any lm-evaluation-harness task: --tasks lm_eval:NAME (--include-path DIR for your YAML)."""

    version = "lm-eval"

    def __init__(self, name: str, include_path: str | None = None, num_fewshot: int | None = None,
                 seed: int | None = None) -> None:
        self.name = name
        self.include_path = include_path
        self.num_fewshot = num_fewshot
        self.seed = seed  # lm-eval's few-shot sampler seed (the run's --seed)
        self._tasks: dict[str, Any] = {}  # leaf name -> lm-eval Task, built on first load (lm-eval's own state)
        self._instances: dict[str, list[Any]] = {}  # sample id -> its Instances, by idx

    @property  # type: ignore[override]
    def group_by(self) -> str | None:
        return "subtask" if len(self._tasks) > 1 else None

    def metric_higher_is_better(self, metric: str) -> bool:
        """lm-eval's own `higher_is_better` of the metric (keys may carry a filter: "exact_match,flexible")."""
        key = metric.partition(",")[0]
        for t in self._tasks.values():
            directions = t.higher_is_better() or {}
            if key in directions:
                return bool(directions[key])
        return True

    # ---------------------------------------------------------------- building
    def _build(self, ctx: TaskContext) -> dict[str, Any]:
        if self._tasks:
            return self._tasks
        include = self.include_path or ctx.options.get("include_path")
        if include and not os.path.isdir(include):
            raise UsageError(f"--include-path {include} is not a folder of lm-eval YAML tasks")
        manager = _manager(include, defaults=False) if include else None
        if manager is None or self.name not in manager.all_tasks:  # the user's folder alone indexes in ms
            manager = _manager(include, defaults=True)
        if self.name not in manager.all_tasks and not self.name.endswith((".yaml", ".yml")):
            raise UsageError(f"unknown lm-eval task '{self.name}'" + (f" (not in lm-eval's tasks nor in {include})"
                             if include else " (pass --include-path DIR for your own YAML tasks)"))
        offline = _go_offline_if_unreachable()
        try:
            try:
                built = manager.load([self.name])["tasks"]
            except KeyError:  # a user group naming built-in tasks: needs the full index
                built = _manager(include, defaults=True).load([self.name])["tasks"]
        except (ConnectionError, OSError, FileNotFoundError) as exc:
            why = "the hub is unreachable" if offline else "check its dataset_path"
            raise DataError(
                f"lm-eval task '{self.name}' could not load its data ({str(exc).splitlines()[0][:160]}): {why}; "
                "for local data write a YAML with `dataset_path: json` and "
                "`dataset_kwargs: {data_files: {test: /abs/file.jsonl}}` and pass --include-path DIR"
            ) from exc
        for t in built.values():
            if self.num_fewshot is not None:
                t.set_config(key="num_fewshot", value=self.num_fewshot)
            t.set_fewshot_seed(seed=ctx.seed if self.seed is None else self.seed)
        self._tasks = dict(sorted(built.items()))
        return self._tasks

    def load(self, ctx: TaskContext) -> list[Sample]:
        samples: list[Sample] = []
        for leaf, t in self._build(ctx).items():
            t.build_all_requests(limit=ctx.limit, rank=0, world_size=1)
            by_doc: dict[int, list[Any]] = {}
            for inst in t.instances:
                by_doc.setdefault(inst.doc_id, []).append(inst)
            for doc_id, insts in sorted(by_doc.items()):
                insts.sort(key=lambda x: x.idx)
                sid = f"{leaf}/{doc_id}" if len(self._tasks) > 1 else str(doc_id)
                self._instances[sid] = insts
                first = insts[0]
                choices = [a[1] for a in (i.args for i in insts)] if first.request_type == "loglikelihood" else None
                samples.append(Sample(id=sid, input=first.args[0], target=_jsonable(t.doc_to_target(first.doc)),
                                      choices=choices, metadata={"subtask": leaf, "doc_id": doc_id}))
        if ctx.limit and len(self._tasks) > 1:  # spread --limit over the leaves, as MMLU does
            samples.sort(key=lambda s: (s.metadata["doc_id"], s.metadata["subtask"]))
        return samples

    # ---------------------------------------------------------------- requests
    def requests(self, sample: Sample) -> list[Request]:
        return [_to_request(inst) for inst in self._instances[sample.id]]

    # ---------------------------------------------------------------- scoring
    def score(self, sample: Sample, outputs: Sequence[Output]) -> Score:
        raise NotImplementedError("lm-eval tasks score in bulk (score_all): lm-eval's filters see the whole task")

    def score_all(self, records: Sequence[SampleRecord], ctx: TaskContext) -> list[Score]:
        if not self._instances:  # re-scoring a stored run: rebuild the instances
            self.load(ctx)
        scores: dict[str, Score] = {}
        for leaf, t in self._tasks.items():
            mine = [r for r in records if r.sample.metadata.get("subtask", leaf) == leaf and r.sample.id in self._instances]
            insts = []
            for r in mine:
                for inst, out in zip(self._instances[r.sample.id], r.outputs):
                    inst.resps = _responses(inst, out)
                    inst.filtered_resps = {}
                    insts.append(inst)
            t._instances = insts
            t.apply_filters()
            for r in mine:
                scores[r.sample.id] = _process(t, self._instances[r.sample.id])
        return [scores.get(r.sample.id, Score({}, explanation={"error": "no lm-eval instance"})) for r in records]

    def aggregate(self, records: Sequence[SampleRecord]) -> dict[str, Any]:
        """lm-eval's aggregation functions per metric; groups get lm-eval's size-weighted mean."""
        from lm_eval.api.metrics import (
            aggregate_subtask_metrics,
            pooled_sample_stderr,
            stderr_for_metric,
        )

        scored = [r for r in records if r.error is None and r.score is not None]
        per_leaf: dict[str, dict[str, dict[str, Any]]] = {}
        for leaf, t in self._tasks.items():
            items: dict[str, list[Any]] = {}
            for r in scored:
                if r.sample.metadata.get("subtask", leaf) == leaf:
                    for key, value in {**r.score.values, **(r.score.answer or {}).get("items", {})}.items():
                        items.setdefault(key, []).append(value)
            aggs = t.aggregation()
            per_leaf[leaf] = {}
            for key, values in items.items():
                fn = aggs[key.partition(",")[0]]
                stderr_fn = stderr_for_metric(fn, BOOTSTRAP_ITERS)
                se = stderr_fn(values) if stderr_fn and len(values) > 1 else math.nan
                per_leaf[leaf][key] = {"value": float(fn(values)), "stderr": float(se), "n": len(values)}
        first = next(iter(self._tasks.values()))
        out: dict[str, Any] = {"lm_eval": {"task": self.name, "n_shot": first.get_config("num_fewshot") or 0,
                                           "higher_is_better": first.higher_is_better(),
                                           "config": first.dump_config() if len(self._tasks) == 1 else None}}
        if len(per_leaf) == 1:
            out["metrics"] = next(iter(per_leaf.values()))
            return out
        out["groups"] = per_leaf
        out["metrics"] = {}
        for key in dict.fromkeys(k for m in per_leaf.values() for k in m):
            ms = [m[key] for m in per_leaf.values() if key in m]
            sizes = [m["n"] for m in ms]
            out["metrics"][key] = {"value": aggregate_subtask_metrics([m["value"] for m in ms], sizes),
                                   "stderr": pooled_sample_stderr([m["stderr"] for m in ms], sizes)
                                   if all(s > 1 for s in sizes) else math.nan, "n": sum(sizes)}
        return out

    def config(self) -> dict[str, Any]:
        return {"lm_eval_task": self.name, "include_path": self.include_path, "num_fewshot": self.num_fewshot,
                "seed": self.seed}


def _to_request(inst: Any) -> Request:
    kind, args = inst.request_type, inst.args
    if kind == "loglikelihood":
        return LoglikelihoodRequest(args[0], args[1])
    if kind == "loglikelihood_rolling":
        return LoglikelihoodRequest("", args[0])
    if kind == "generate_until":
        gen = dict(args[1] or {})
        until = gen.get("until") or []
        temperature = float(gen.get("temperature", 0.0)) if gen.get("do_sample", True) else 0.0
        return GenerateRequest(prompt=args[0], max_tokens=int(gen.get("max_gen_toks", 256)),
                               stop=tuple([until] if isinstance(until, str) else until), temperature=temperature,
                               top_p=float(gen.get("top_p", 1.0)), n=inst.repeats or 1)
    raise UsageError(f"lm-eval request type '{kind}' is not supported by the evalsuite bridge")


def _responses(inst: Any, out: Output) -> list[Any]:
    """An evalsuite Output as lm-eval's resps: one entry per repeat."""
    if inst.request_type == "loglikelihood":
        return [(out.logprob, bool(out.is_greedy))]
    if inst.request_type == "loglikelihood_rolling":
        return [out.logprob]
    texts = out.texts or [""]
    return (texts * (inst.repeats or 1))[: inst.repeats or 1]


def _process(t: Any, insts: list[Any]) -> Score:
    values: dict[str, float | None] = {}
    items: dict[str, Any] = {}
    for filter_key in insts[0].filtered_resps:
        metrics = t.process_results(insts[0].doc, [i.filtered_resps[filter_key] for i in insts])
        for metric, value in metrics.items():
            key = metric if filter_key == "none" else f"{metric},{filter_key}"
            if isinstance(value, (bool, int, float)):
                values[key] = float(value)
            else:
                items[key] = _jsonable(value)
    answer: dict[str, Any] = {"filtered": {k: _jsonable(v) for k, v in insts[0].filtered_resps.items()}}
    if items:
        answer["items"] = items
    return Score(values, answer=answer)


def _jsonable(value: Any) -> Any:
    """numpy scalars and tuples as plain JSON values (samples.jsonl)."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


lm_eval_task = LMEvalTask
