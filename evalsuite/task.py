"""The task interface: load samples, make requests, score outputs, aggregate.

A task is a small Python class. The runner owns batching, caching and I/O; the task only says
what to ask and how to judge the answer. Subclass `Task` (it supplies the defaults) and register
a factory with `@evalsuite.registry.task("name")` plus an entry point in `evalsuite.tasks`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from evalsuite import stats
from evalsuite.errors import DataError
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
    """Base class with the defaults; override `load`, `requests` and `score`."""

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

    def load(self, ctx: TaskContext) -> list[Sample]:
        raise NotImplementedError

    def requests(self, sample: Sample) -> list[Request]:
        raise NotImplementedError

    def next_requests(self, sample: Sample, outputs: Sequence[Output]) -> list[Request]:
        """Multi-turn tasks return the next round's requests, seeing earlier outputs; [] ends."""
        return []

    def score(self, sample: Sample, outputs: Sequence[Output]) -> Score:
        raise NotImplementedError

    def score_all(self, records: Sequence[SampleRecord], ctx: TaskContext) -> list[Score]:
        """Score a whole task at once; override to parallelise (e.g. code execution)."""
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

    def parse_outputs(self, rows: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
        """Outputs produced elsewhere (`evalsuite score --outputs`): sample id -> texts.

        Accepts `{"id": ..., "output": ...}` lines; tasks with a native format override this.
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
        """What defines this task's numbers (goes into results.json)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and _jsonable(v)}


def _metrics(records: Sequence[SampleRecord]) -> dict[str, dict[str, float]]:
    keys: list[str] = []
    for r in records:
        keys.extend(k for k in r.score.values if k not in keys)  # type: ignore[union-attr]
    result = {}
    for k in keys:
        vals = [float(v) for r in records if (v := r.score.values.get(k)) is not None]  # type: ignore[union-attr]
        result[k] = stats.metric(vals)
    return result


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, tuple, dict))
