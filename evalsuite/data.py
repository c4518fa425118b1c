"""Loading data sets: a local tree (`--data-dir`, laid out like shared/data) or the HF hub.

The hub path is the real `datasets.load_dataset` call; offline it fails, and we say so in one
line with the local alternative instead of a 40-line traceback.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from evalsuite.errors import DataError


def load_hub(path: str, name: str | None = None, split: str = "test", **kwargs: Any) -> list[dict[str, Any]]:
    """Rows of a hub dataset (or of a local `datasets` loader such as 'json' with data_files)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataError("the 'datasets' package is needed to load hub data: pip install datasets") from exc
    try:
        ds = datasets.load_dataset(path, name, split=split, **kwargs)
    except Exception as exc:  # noqa: BLE001 - network, auth and format errors all end here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"cannot load dataset '{path}'{f' ({name})' if name else ''} split '{split}': {first[:200]}. "
            "Offline? Pass --data-dir (a local copy laid out like shared/data) or set EVALSUITE_DATA_DIR"
        ) from exc
    return [dict(row) for row in ds]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
