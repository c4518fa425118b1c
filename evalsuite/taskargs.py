"""Per-task arguments: `-T mmlu.num_fewshot=0`, `--task-args mmlu:num_fewshot=0,...`, and the run's sampling flags.

Arguments are keyed by task name (`{"mmlu": {"num_fewshot": 0}}`): with several tasks a bare
`key=value` would reach tasks it means nothing to, so it is accepted only when one task runs.
A task's valid keys are the keyword parameters of its factory. The run-wide flags
`--samples-per-task`, `--temperature` and `--seed` become the task arguments `samples_per_task`,
`temperature` and `seed` of the tasks that declare them (an explicit task argument wins); a task
that declares none of them does not sample, and refuses the flag instead of ignoring it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from evalsuite.errors import UsageError

SAMPLING_FLAGS = {"samples_per_task": "--samples-per-task", "temperature": "--temperature", "seed": "--seed"}
DEFAULT_SEED = 1234


def typed(value: str) -> Any:
    """`true`/`false`/`none`, numbers, else the text."""
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse(task_args: str | None, per_task: Sequence[str], tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The CLI's `--task-args` and repeated `-T TASK.KEY=VALUE` as {task: {key: value}}.

    `--task-args` parts are `[TASK:]key=value`, comma-separated; a part without `TASK:` belongs to
    the task named before it, and with no task named at all to the only task of the run.
    """
    out: dict[str, dict[str, Any]] = {}
    current: str | None = None
    for part in filter(None, (task_args or "").split(",")):
        key, sep, value = part.partition("=")
        task, colon, key = key.strip().rpartition(":")
        if not sep or not key.strip():
            raise UsageError(f"malformed --task-args '{task_args}': expected [TASK:]key=value[,key=value...] "
                             "(or -T TASK.key=value)")
        if colon:
            current = task
        elif current is None:
            if len(tasks) != 1:
                raise UsageError(f"--task-args '{part}' names no task, and this run has {len(tasks)} tasks "
                                 f"({', '.join(tasks)}): write --task-args TASK:{part} or -T TASK.{part}")
            current = tasks[0]
        out.setdefault(current, {})[key.strip()] = typed(value.strip())
    for item in per_task:
        key, sep, value = item.partition("=")
        task, dot, key = key.strip().rpartition(".")
        if not sep or not dot or not task or not key:
            raise UsageError(f"malformed -T '{item}': expected -T TASK.key=value (e.g. -T mmlu.num_fewshot=0)")
        out.setdefault(task, {})[key] = typed(value.strip())
    unknown = sorted(set(out) - set(tasks))
    if unknown:
        raise UsageError(f"task arguments name task(s) {unknown} that are not in --tasks {','.join(tasks)}")
    return out


def by_task(names: Sequence[str], task_args: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """`{task: {key: value}}`; a flat `{key: value}` (the older form) only when one task runs."""
    task_args = dict(task_args or {})
    strays = sorted(k for k, v in task_args.items() if k not in names and isinstance(v, dict))
    if strays:  # arguments keyed by a task that does not run (a typo, or a task left out of the run)
        raise UsageError(f"task arguments for {', '.join(strays)}: not among this run's tasks ({', '.join(names)}); "
                         "add the task to the run or drop its arguments")
    nested = {k: v for k, v in task_args.items() if k in names and isinstance(v, dict)}
    flat = {k: v for k, v in task_args.items() if k not in nested}
    if flat and nested:
        raise UsageError(f"task arguments mix per-task entries {sorted(nested)} with bare keys {sorted(flat)}: "
                         "key every argument by its task")
    if flat:
        if len(names) != 1:
            raise UsageError(f"task arguments {sorted(flat)} name no task, and this run has {len(names)} tasks "
                             f"({', '.join(names)}): give them per task, e.g. -T {names[0]}.{next(iter(flat))}=... "
                             f"or --task-args {names[0]}:{next(iter(flat))}=...")
        return {names[0]: flat}
    return {name: dict(nested.get(name, {})) for name in names}


def accepted(factory: Callable[..., Any], positional: int = 0) -> tuple[list[str], bool]:
    """The keyword arguments a factory takes (after `positional` leading ones), and whether it takes any (**kw)."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # not introspectable: let the call decide
        return [], True
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)][positional:]
    return [p.name for p in named], any(p.kind is p.VAR_KEYWORD for p in params)


def bind(name: str, factory: Callable[..., Any], args: dict[str, Any], ctx: Any, positional: int = 0) -> dict[str, Any]:
    """The keyword arguments to build task `name` with: its own, plus the run's sampling flags it declares."""
    keys, any_key = accepted(factory, positional)
    unknown = sorted(set(args) - set(keys)) if not any_key else []
    if unknown:
        raise UsageError(f"task '{name}' does not take {', '.join(repr(k) for k in unknown)}; "
                         f"valid keys: {', '.join(keys) or 'none'}")
    kwargs = dict(args)
    given = {"samples_per_task": ctx.samples_per_task if ctx.samples_per_task != 1 else None,
             "temperature": ctx.temperature}
    for key, value in given.items():
        if value is None or key in kwargs:
            continue
        if key not in keys:
            raise UsageError(f"task '{name}' does not sample, so {SAMPLING_FLAGS[key]} would not change it: drop the "
                             f"flag, or set it only for the tasks that sample (-T TASK.{key}=...)")
        kwargs[key] = value
    if "seed" in keys and "seed" not in kwargs:
        kwargs["seed"] = ctx.seed
    judge_samples = (getattr(ctx, "options", None) or {}).get("judge_samples")  # --judge-samples K
    if judge_samples is not None and "judge_samples" in keys and "judge_samples" not in kwargs:
        kwargs["judge_samples"] = judge_samples
    return kwargs


def uses_seed(factories: dict[str, Callable[..., Any]]) -> list[str]:
    """The tasks (by name) whose factory declares a `seed`."""
    return [name for name, f in factories.items() if "seed" in accepted(f, 1 if ":" in name else 0)[0]]
