"""The call cache is shared by processes: a trainer's checkpoint scorers and a run write at once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from evalsuite.cache import CallCache
from evalsuite.records import Output


def test_a_put_is_visible_to_another_writer_at_once_and_never_blocks_it(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    first, second = CallCache(path), CallCache(path)
    second._db.execute("PRAGMA busy_timeout=200")  # fail fast instead of waiting 30 s
    first.put("k1", Output(texts=["a"]))
    # before the fix the first writer kept its transaction open: the row was invisible and
    # the second writer's insert failed with "database is locked"
    assert second.get_many(["k1"])["k1"].texts == ["a"]
    try:
        second.put("k2", Output(texts=["b"]))
    except sqlite3.OperationalError as exc:  # pragma: no cover - the bug this test guards
        raise AssertionError(f"second writer blocked: {exc}") from exc
    assert first.get_many(["k2"])["k2"].texts == ["b"]
    first.close()
    second.close()


def test_errors_are_not_cached(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.sqlite")
    cache.put("k", Output(texts=[], error="HTTP 500"))
    assert cache.get_many(["k"]) == {}
    cache.close()
