"""The task interface: load samples, make requests, score outputs, aggregate.

A task is a small Python class. The runner owns batching, caching and I/O; the task only says
what to ask and how to judge the answer. Subclass `Task` (it supplies the defaults) and name a
factory (or the class itself) in your package's `evalsuite.tasks` entry points.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from evalsuite import stats
from evalsuite.errors import DataError, UsageError
from evalsuite.records import Output, Request, Sample, SampleRecord, Score


@dataclass
class TaskContext:
    """What a task may know about the run it is part of."""

    data_dir: Path | None = None
    limit: int | None = None
    seed: int = 1234
    samples_per_task: int = 1
    temperature: float | None = None
    allow_code_execution: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    judge: Any = None  # a `runner.ModelClient` for LLM-as-judge scorers (`--judge MODEL`), else None

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike | None = None, **kw: Any) -> TaskContext:
        d = data_dir or os.environ.get("EVALSUITE_DATA_DIR")
        return cls(data_dir=Path(d).expanduser().resolve() if d else None, **kw)

    def data_path(self, *parts: str, hub_hint: str = "") -> Path:
        """A file or folder under the data dir, or a `DataError` saying how to provide it."""
        if self.data_dir is None:
            raise DataError(
                f"no data dir for '{'/'.join(parts)}': pass --data-dir DIR or set EVALSUITE_DATA_DIR"
                + (f" (or use the hub dataset {hub_hint} where the hub is reachable)" if hub_hint else "")
            )
        p = self.data_dir.joinpath(*parts)
        if not p.exists():
            raise DataError(f"missing data: {p} does not exist (check --data-dir / EVALSUITE_DATA_DIR)")
        return p


class Task:
    """Base class: every hook the runner calls, with its default. Override `load`, `requests`, `score`.

    The lifecycle, in the order the runner calls it:
    1. the factory builds the task from its declared arguments (`-T task.key=value`); those
       arguments are its `config()`: what defines its numbers, recorded in results.json;
    2. `check_ready()` before any model loads (missing optional packages, data it can check);
    3. `setup(ctx)` once per run, with the run's settings (validate them against the task);
    4. `load(ctx)` -> samples; `requests(sample)` / `next_requests(sample, outputs)` per round;
    5. `score_all(records, ctx)` (default: `score` per sample), then `aggregate(records)`;
    `parse_outputs(rows, samples)` reads outputs made elsewhere (`evalsuite score --outputs`).
    Run settings come in through `ctx`; a task keeps none of them on itself, and a task that
    samples declares `samples_per_task` / `temperature` / `seed` arguments to receive the run flags.
    """

    name: str = "task"
    version: str = "1"
    group_by: str | None = None  # metadata key whose values get their own metrics (e.g. "subject")
    requires_code_execution: bool = False
    # Declared metric directions: metric name -> True if higher is better. Unlisted metrics are
    # higher-is-better; results.json records the direction of every metric, compare and gate read it.
    higher_is_better: ClassVar[dict[str, bool]] = {}

    def metric_higher_is_better(self, metric: str) -> bool:
        """The declared direction of `metric` (a group's metrics share their task's declaration)."""
        if metric in self.higher_is_better:
            return self.higher_is_better[metric]
        for name, direction in self.higher_is_better.items():  # e.g. "judge_error" declares "turn_1.judge_error"
            if metric.endswith("." + name):
                return direction
        return True

    def check_ready(self) -> None:
        """Fail fast, before a model loads, on what this task needs and lacks (default: nothing)."""

    def setup(self, ctx: TaskContext) -> None:
        """Check the run's settings against this task, once, before loading (default: nothing to check)."""

    def load(self, ctx: TaskContext) -> list[Sample]:
        raise NotImplementedError(f"task '{self.name}' must implement load(ctx)")

    def requests(self, sample: Sample) -> list[Request]:
        raise NotImplementedError(f"task '{self.name}' must implement requests(sample)")

    def next_requests(self, sample: Sample, outputs: Sequence[Output]) -> list[Request]:
        """Multi-turn tasks return the next round's requests, seeing earlier outputs; [] ends."""
        return []

    def score(self, sample: Sample, outputs: Sequence[Output]) -> Score:
        raise NotImplementedError(f"task '{self.name}' must implement score(sample, outputs) or score_all")

    def score_all(self, records: Sequence[SampleRecord], ctx: TaskContext) -> list[Score]:
        """Score a whole task at once; override to parallelise (e.g. code execution) or to call a judge."""
        return [self.score(r.sample, r.outputs) for r in records]

    def aggregate(self, records: Sequence[SampleRecord]) -> dict[str, Any]:
        """Mean and stderr of every score, overall and per `group_by` value."""
        scored = [r for r in records if r.error is None and r.score is not None]
        out: dict[str, Any] = {"metrics": _metrics(scored)}
        if self.group_by:
            groups: dict[str, list[SampleRecord]] = {}
            for r in scored:
                groups.setdefault(str(r.sample.metadata.get(self.group_by)), []).append(r)
            out["groups"] = {g: _metrics(rs) for g, rs in sorted(groups.items())}
        return out

    def parse_outputs(self, rows: Iterable[dict[str, Any]], samples: Sequence[Sample] | None = None) -> dict[str, list[str]]:
        """Outputs produced elsewhere (`evalsuite score --outputs`): sample id -> texts.

        Accepts `{"id": ..., "output": ...}` lines; tasks with a native format override this.
        `samples` are the task's loaded samples, for formats that name a sample by its prompt.
        """
        out: dict[str, list[str]] = {}
        for row in rows:
            sid = row.get("id", row.get("sample_id"))
            text = row.get("output", row.get("completion", row.get("response")))
            if sid is None or text is None:
                raise DataError(f"{self.name}: an outputs line needs 'id' and 'output' keys, got {sorted(row)}")
            out.setdefault(str(sid), []).append(text)
        return out

    def config(self) -> dict[str, Any]:
        """What defines this task's numbers (results.json): its declared arguments and their values.

        The arguments are a dataclass task's init fields, else the parameters of its `__init__`
        (each kept under the same attribute name). Override to add what is derived from them.
        """
        return {k: _plain(v) for k, v in declared_arguments(self).items() if not k.startswith("_")}


def sampling_temperature(task: str, samples_per_task: int, temperature: float | None, sampled: float) -> float:
    """The temperature a sampling task uses: `temperature`, else greedy for one sample and `sampled` for several."""
    if isinstance(samples_per_task, bool) or not isinstance(samples_per_task, int) or samples_per_task < 1:
        raise UsageError(f"task '{task}': samples_per_task must be a whole number >= 1, got {samples_per_task!r}")
    if temperature is None:
        return sampled if samples_per_task > 1 else 0.0
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise UsageError(f"task '{task}': temperature must be a number >= 0 (0 is greedy), got {temperature!r}")
    if samples_per_task > 1 and temperature == 0:
        raise UsageError(f"task '{task}': {samples_per_task} samples per prompt at temperature 0 are {samples_per_task} "
                         "identical greedy answers; pass a temperature > 0 or one sample")
    return float(temperature)


def declared_arguments(task: Any) -> dict[str, Any]:
    """A task's declared arguments and current values (dataclass fields, or `__init__` parameters)."""
    if dataclasses.is_dataclass(task):
        return {f.name: getattr(task, f.name) for f in dataclasses.fields(task) if f.init}
    params = inspect.signature(type(task).__init__).parameters
    return {n: getattr(task, n) for n, p in params.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and hasattr(task, n)}


def _plain(v: Any) -> Any:
    """A JSON-ready value: tuples as lists, paths and other objects as text."""
    if isinstance(v, (str, int, float, bool, type(None))):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return str(v)


def _metrics(records: Sequence[SampleRecord]) -> dict[str, dict[str, float]]:
    keys: list[str] = []
    for r in records:
        keys.extend(k for k in r.score.values if k not in keys)  # type: ignore[union-attr]
    result = {}
    for k in keys:
        vals = [float(v) for r in records if (v := r.score.values.get(k)) is not None]  # type: ignore[union-attr]
        result[k] = stats.metric(vals)
    return result
