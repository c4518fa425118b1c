"""Generation lengths that keep a run on a CPU model in minutes, said out loud wherever it applies.

IFEval's published 1,280 new tokens (MT-Bench 1,024) take hours on a CPU: SmolLM2-135M generates
about 10-13 tokens/s on 2 cores. On a model that runs on the CPU, a task's own `max_tokens` above
`CPU_MAX_TOKENS` is capped to it, unless the user set that task's `max_tokens` (`-T TASK.max_tokens=N`)
or turned the cap off (`--cpu-max-tokens none`). The capped value is the task's config in results.json
(so the cache key, compare and gate see it), the task's own default is recorded next to it, the run
prints one line per capped task, the score table names it, and `score --run-dir` keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CPU_MAX_TOKENS = 512
CAPPED_FROM = "max_tokens_task_default"  # the results.json config key that records the task's own value


def cap_max_tokens(tasks: Mapping[str, Any], task_args: Mapping[str, Mapping[str, Any]], device: str | None,
                   cap: int | None) -> dict[str, int]:
    """Cap each task's `max_tokens` at `cap` on a CPU device; returns {task: its own max_tokens} for those capped.

    `task_args` is per task (`taskargs.by_task`): a task whose `max_tokens` the user gave keeps it."""
    if cap is None or not str(device or "").startswith("cpu"):
        return {}
    capped: dict[str, int] = {}
    for name, task in tasks.items():
        own = getattr(task, "max_tokens", None)
        if isinstance(own, int) and not isinstance(own, bool) and own > cap and "max_tokens" not in task_args.get(name, {}):
            task.max_tokens = cap
            task.max_tokens_task_default = own  # read by `recorded_config`
            capped[name] = own
    return capped


def recorded_config(task: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The task's config for results.json, with its own default beside a capped max_tokens."""
    own = getattr(task, "max_tokens_task_default", None)
    return {**config, CAPPED_FROM: own} if own is not None else config


def apply(tasks: Mapping[str, Any], names: list[str], task_args: Mapping[str, Any], device: str | None,
          cap: int | None) -> dict[str, int]:
    """`cap_max_tokens` for a run (task arguments as the run got them), with one line per capped task."""
    from evalsuite import taskargs
    from evalsuite.progress import console

    capped = cap_max_tokens(tasks, taskargs.by_task(names, dict(task_args)), device, cap)
    for name, own in capped.items():
        console.print(f"[yellow]{notice(name, own, cap)}[/yellow]")  # type: ignore[arg-type]
    return capped


def restore(tasks: Mapping[str, Any], names: list[str], task_args: Mapping[str, Any],
            stored: Mapping[str, Any]) -> None:
    """Re-scoring a capped run (`score --run-dir`): each task keeps the max_tokens its answers were made with.

    `stored` is the run's `{task: TaskResult}`. Without this the re-scored run would record the task's own
    default (IFEval's 1,280) for answers generated at 512, and `compare` would refuse the pair."""
    from evalsuite import taskargs

    args = taskargs.by_task(names, dict(task_args))
    for name, task in tasks.items():
        config = stored[name].config if name in stored else {}
        if config.get(CAPPED_FROM) is not None and "max_tokens" not in args.get(name, {}) and hasattr(task, "max_tokens"):
            task.max_tokens, task.max_tokens_task_default = config["max_tokens"], config[CAPPED_FROM]


def notice(name: str, own: int, cap: int) -> str:
    return (f"{name}: max_tokens {own} -> {cap} on the CPU, to keep the run in minutes "
            f"(-T {name}.max_tokens={own} or --cpu-max-tokens none keeps the task's own)")
