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
    if "/" in path and not Path(path).exists():  # a hub id (not a local builder such as "json")
        from evalsuite.hub import unreachable_reason

        if (reason := unreachable_reason()) is not None:
            raise DataError(f"cannot load dataset '{path}': {reason}. Pass --data-dir (a local copy laid out like "
                            "shared/data) or set EVALSUITE_DATA_DIR")
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
    """The JSON objects of a JSONL file; a bad line is a `DataError` naming the file and its line."""
    return [row for _, row in numbered_jsonl(path)]


def numbered_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line, so that callers can name the line of a bad row."""
    rows = []
    try:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{n}: expected a JSON object, got a JSON {type(row).__name__}")
                rows.append((n, row))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return rows


def require(row: dict[str, Any], keys: tuple[str, ...], path: Path, line: int) -> None:
    """A `DataError` naming the file, the line and the missing fields when a row lacks any of `keys`."""
    missing = [k for k in keys if row.get(k) is None]
    if missing:
        raise DataError(f"{path}:{line}: row has no {', '.join(repr(k) for k in missing)} field "
                        f"(has {', '.join(sorted(row)) or 'nothing'}); fix or remove the line")


def read_csv(path: Path) -> list[dict[str, str]]:
    return [row for _, row in numbered_csv(path)]


def numbered_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row by header) for each CSV record; a row with missing fields names its line."""
    rows = []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            start = 2
            for row in reader:
                line = start
                start = reader.line_num + 1
                if None in row:  # more fields than the header
                    raise DataError(f"{path}:{line}: {len(header) + len(row[None])} fields, the header has "  # type: ignore[index]
                                    f"{len(header)} ({','.join(header)}); fix or remove the line")
                short = [k for k, v in row.items() if v is None]
                if short:
                    raise DataError(f"{path}:{line}: missing field(s) {', '.join(short)} (the header is "
                                    f"{','.join(header)}); fix or remove the line")
                rows.append((line, row))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return rows
