"""The run directory: the single source for reports, gates and re-scoring.

Layout of `runs/<timestamp>-<model>-<tasks>/`:
- `results.json`: the typed run log (`evalsuite.runlog.RunResults`): per task its metrics
  ({value, stderr, n, higher_is_better}), per-group metrics, config, errors, missing outputs, timing;
  the run's model, config, environment, status; a training or arena section for those runs.
- `samples.jsonl`: one `SampleRecord.to_json()` line per sample, all tasks.
Every write is atomic (temp file + rename), so a killed run leaves either the old or the new
file, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalsuite import runlog
from evalsuite.errors import UsageError
from evalsuite.records import SampleRecord
from evalsuite.runlog import RunResults, TaskResult

if TYPE_CHECKING:
    import pandas as pd

RESULTS = "results.json"
SAMPLES = "samples.jsonl"
DECONTAMINATION = "decontamination.json"  # the trainer's report on its data, in its eval runs


def _clean(obj: Any) -> Any:
    """JSON has no NaN: store it as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; run files are for CI uploaders and other users too
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=2, ensure_ascii=False, default=str) + "\n")


def write_samples(path: Path, records: Iterable[SampleRecord]) -> None:
    lines = (json.dumps(_clean(r.to_json()), ensure_ascii=False, default=str) for r in records)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:limit] or "x"


def new_run_dir(output_dir: str | os.PathLike, model: str, tasks: Iterable[str]) -> Path:
    """A fresh `<output_dir>/<timestamp>-<model>-<tasks>/`, checked writable up front."""
    base = Path(output_dir)
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(Path(model).name or model)}-{_slug('+'.join(tasks))}"
    path = base / name
    i = 1
    while path.exists():
        i += 1
        path = base / f"{name}-{i}"
    try:
        path.mkdir(parents=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write the run directory {path}: {exc.strerror}; pass a writable --output-dir") from exc
    return path


@dataclass
class RunLog:
    """A run directory read back: the typed results.json plus every sample record.

    A training run keeps its samples in the best checkpoint's eval runs; `load_run` reads them from
    there, so compare, gate and reports treat a trainer run like any other run.
    """

    path: Path
    results: RunResults
    records: list[SampleRecord]

    def __fspath__(self) -> str:  # a run log is its directory: pass it wherever a run dir is expected
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:  # `log / "samples.jsonl"`, as with the directory itself
        return self.path / name

    @property
    def tasks(self) -> dict[str, TaskResult]:
        return self.results.tasks

    @property
    def name(self) -> str:
        return str(self.results.model.name or self.path.name)

    def records_for(self, task: str) -> list[SampleRecord]:
        return [r for r in self.records if r.task == task]

    def to_dataframe(self) -> pd.DataFrame:
        """One row per sample: task, id, answer, target, error, and one column per score."""
        import pandas as pd

        rows = []
        for r in self.records:
            d = r.to_json()
            row = {k: d[k] for k in ("task", "id", "target", "answer", "error")}
            row["output"] = r.outputs[0].text if r.outputs and r.outputs[0].texts else None
            row.update({f"score.{k}": v for k, v in d["scores"].items()})
            row.update({f"meta.{k}": v for k, v in d["metadata"].items() if isinstance(v, (str, int, float, bool))})
            rows.append(row)
        return pd.DataFrame(rows)

    def checkpoints(self) -> pd.DataFrame:
        """A training run's checkpoint table: one row per evaluated step (empty for other runs)."""
        import pandas as pd

        training = self.results.training
        if training is None:
            return pd.DataFrame(columns=["step", "train_loss", "val_loss", "best"])
        best = training.best.step if training.best else None
        rows = [{"step": c.step, "train_loss": c.train_loss, "val_loss": c.val_loss, "best": c.step == best,
                 **c.scores, "checkpoint": c.checkpoint} for c in training.steps]
        return pd.DataFrame(rows)


def load_results(path: Path) -> RunResults:
    """results.json of a run dir, typed; a `UsageError` naming the file when it is missing or broken."""
    if path.is_dir():
        path = path / RESULTS
    if not path.is_file():
        raise UsageError(f"{path.parent} is not an evalsuite run directory (no {RESULTS})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tasks", {}), dict):
        raise UsageError(f"{path} is not an evalsuite results file (expected an object with a 'tasks' object)")
    return runlog.parse(data, path)


STEP_SUFFIX = re.compile(r"^(?P<run>.+)@step-(?P<step>\d+)$")


def load_run(path: str | os.PathLike) -> RunLog:
    """Read a run directory (an eval, training or arena run); a `UsageError` if it is not one.

    `TRAIN_RUN@step-N` reads one checkpoint of a training run as a run of its own: its eval runs'
    tasks and samples, named by run and step. A training run itself reads as its best checkpoint."""
    p = Path(path)
    match = STEP_SUFFIX.match(str(path))
    if match and not p.exists():
        return load_checkpoint(Path(match["run"]), int(match["step"]))
    results = load_results(p)
    samples_path = p / SAMPLES
    records = _read_samples(samples_path) if samples_path.is_file() else []
    if not records and results.training is not None and results.training.best is not None:
        records = _eval_records(p, results.training.best.eval_runs)
    return RunLog(p, results, records)


def load_checkpoint(run_dir: Path, step: int) -> RunLog:
    """One evaluated checkpoint of a training run, as a run log of its own (`RUN@step-N`)."""
    training_run = load_results(run_dir)
    if training_run.training is None:
        raise UsageError(f"{run_dir} is not a training run: `@step-N` names a checkpoint of `evalsuite train`")
    rows = {c.step: c for c in training_run.training.steps}
    if step not in rows or not rows[step].eval_runs:
        scored = ", ".join(str(s) for s, c in sorted(rows.items()) if c.eval_runs) or "none"
        raise UsageError(f"{run_dir} has no scored checkpoint at step {step} (scored steps: {scored})")
    tasks: dict[str, TaskResult] = {}
    for sub in rows[step].eval_runs:
        tasks.update(load_results(run_dir / sub).tasks)
    name = f"{run_dir.name}@step-{step}"
    model = training_run.model.model_copy(update={"name": name, "adapter": rows[step].checkpoint})
    results = training_run.model_copy(update={"tasks": tasks, "model": model, "kind": "eval"})
    return RunLog(run_dir, results, _eval_records(run_dir, rows[step].eval_runs))


def checkpoint_specs(run_dir: Path) -> list[str]:
    """`RUN@step-N` for every scored checkpoint of a training run, in step order."""
    results = load_results(run_dir)
    if results.training is None:
        return []
    return [f"{run_dir}@step-{c.step}" for c in sorted(results.training.steps, key=lambda c: c.step) if c.eval_runs]


def _eval_records(run_dir: Path, eval_runs: list[str]) -> list[SampleRecord]:
    records: list[SampleRecord] = []
    for sub in eval_runs:
        if (run_dir / sub / SAMPLES).is_file():
            records.extend(_read_samples(run_dir / sub / SAMPLES))
    return records


def _read_samples(path: Path) -> list[SampleRecord]:
    """Every record of samples.jsonl; a broken line is a `UsageError` naming the file and line."""
    records: list[SampleRecord] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                records.append(SampleRecord.from_json(json.loads(raw.decode("utf-8"))))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSON and Unicode errors are ValueErrors
                detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
                problem = f"{type(exc).__name__}: {detail}"
                raise UsageError(f"{path}:{lineno}: not a valid sample record ({problem})") from exc
    return records


class RunWriter:
    """The one writer of a run directory: results.json after every change, samples.jsonl after every task.

    A write that fails (disk full, permissions) marks the run `failed` where it still can and becomes a
    `UsageError` naming the file; calls stay in the cache, so re-running costs no model time.
    """

    def __init__(self, path: Path, results: RunResults) -> None:
        self.path, self.results = path, results
        self.records: list[SampleRecord] = []
        if results.process is None:
            results.process = runlog.this_process()
        self.save()

    def save(self) -> None:
        self._write(self.path / RESULTS, lambda p: write_json(p, self.results.to_json()))

    def add_task(self, name: str, result: TaskResult, records: list[SampleRecord]) -> None:
        self.records.extend(records)
        self.results.tasks[name] = result
        self._write(self.path / SAMPLES, lambda p: write_samples(p, self.records))
        self.save()

    def finish(self, status: runlog.Status, error: str | None = None) -> RunLog:
        self.results.status, self.results.error = status, error
        self.save()
        return RunLog(self.path, self.results, self.records)

    def _write(self, path: Path, write: Any) -> None:
        try:
            write(path)
        except OSError as exc:
            self.results.status, self.results.error = "failed", f"cannot write {path.name}: {exc.strerror}"
            with contextlib.suppress(OSError):
                write_json(self.path / RESULTS, self.results.to_json())
            raise UsageError(f"cannot write {path}: {exc.strerror}; what was written is kept and every model call "
                             "is cached, so re-running the same command after freeing space costs no model time") from exc
