"""The run directory: the single source for reports, gates and re-scoring.

Layout of `runs/<timestamp>-<model>-<tasks>/`:
- `results.json`: per task its metrics ({value, stderr, n}), per-group metrics, config, timing;
  plus the run's model (name, backend, fingerprint), config, package versions, git sha, status.
- `samples.jsonl`: one `SampleRecord.to_json()` line per sample, all tasks.
Every write is atomic (temp file + rename), so a killed run leaves either the old or the new
file, never half of one.
"""

from __future__ import annotations

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

from evalsuite.errors import UsageError
from evalsuite.records import SampleRecord

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
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    """A run directory read back: results.json plus every sample record."""

    path: Path
    results: dict[str, Any]
    records: list[SampleRecord]

    @property
    def tasks(self) -> dict[str, Any]:
        return self.results.get("tasks", {})

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


def load_run(path: str | os.PathLike) -> RunLog:
    """Read a run directory; a `UsageError` if it is not one."""
    p = Path(path)
    results_path = p / RESULTS
    if not results_path.is_file():
        raise UsageError(f"{p} is not an evalsuite run directory (no {RESULTS})")
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{results_path} is not valid JSON: {exc}") from exc
    if not isinstance(results, dict) or not isinstance(results.get("tasks", {}), dict):
        raise UsageError(f"{results_path} is not an evalsuite results file (expected an object with a 'tasks' object)")
    samples_path = p / SAMPLES
    records = _read_samples(samples_path) if samples_path.is_file() else []
    return RunLog(p, results, records)


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
