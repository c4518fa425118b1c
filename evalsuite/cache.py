"""SQLite cache of every model call, so a killed run resumes where it stopped.

Keys come from `records.request_key` (model fingerprint + request), never from batch size or
device count. Every write is committed at once: a SIGKILL loses nothing, and the write lock is
never held across a model call, so several processes (a run, a trainer's checkpoint scorers) can
share one cache. WAL mode with synchronous=NORMAL makes such a commit cheap (no fsync).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from pathlib import Path

from evalsuite.records import Output


def default_cache_dir() -> Path:
    env = os.environ.get("EVALSUITE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("evalsuite"))


class CallCache:
    """Request key -> Output, persisted in `<cache_dir>/calls.sqlite`."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_cache_dir() / "calls.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, output TEXT NOT NULL, created REAL)")
        self._db.commit()
        self.hits = 0
        self.misses = 0

    def get_many(self, keys: list[str]) -> dict[str, Output]:
        found: dict[str, Output] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = self._db.execute(
                f"SELECT key, output FROM calls WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            found.update({k: Output(**json.loads(v)) for k, v in rows})
        self.hits += len(found)
        self.misses += len(set(keys)) - len(found)
        return found

    def put(self, key: str, output: Output) -> None:
        """Store a successful output; errors are not cached so a re-run retries them."""
        if output.error is not None:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO calls (key, output, created) VALUES (?, ?, ?)",
            (key, json.dumps(dataclasses.asdict(output)), time.time()),
        )
        self._db.commit()

    def flush(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self.flush()
        self._db.close()


class NullCache(CallCache):
    """`--no-cache`: remembers nothing."""

    def __init__(self) -> None:  # noqa: D107 - no database
        self.hits = 0
        self.misses = 0

    def get_many(self, keys: list[str]) -> dict[str, Output]:
        self.misses += len(set(keys))
        return {}

    def put(self, key: str, output: Output) -> None:
        return None

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None
