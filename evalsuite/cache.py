"""SQLite cache of every model call, so a killed run resumes where it stopped.

Keys come from `records.request_key` (model fingerprint + request), never from batch size,
device count, rank or world size. Every write is committed at once: a SIGKILL loses nothing, and
the write lock is never held across a model call, so several processes (a run, a trainer's
checkpoint scorers, the ranks of a torchrun evaluation) can share one cache. WAL mode with
synchronous=NORMAL makes such a commit cheap (no fsync). A writer waits out the others' locks:
SQLite's busy timeout first, then, for the cases where SQLite answers "database is locked" at once
(two processes creating the file, switching it to WAL), retries with backoff for up to a minute.

A damaged entry is a miss, never a wrong answer: each row stores a digest of its key and output,
and a row that does not parse, does not match its digest or sits on an unreadable page is
recomputed. A file that is not a cache at all stops the run before the model loads, naming the
file and the fix. `evalsuite cache check|clear` inspects or removes the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import TypeVar
from pathlib import Path

from evalsuite.errors import UsageError
from evalsuite.records import Output

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 30.0  # SQLite's own wait for another process's write lock
LOCKED_RETRY_S = 60.0  # then how long "database is locked" is retried, in all
T = TypeVar("T")


def default_cache_dir() -> Path:
    env = os.environ.get("EVALSUITE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("evalsuite"))


def default_cache_path() -> Path:
    return default_cache_dir() / "calls.sqlite"


def _fix(path: Path) -> str:
    return f"run with --no-cache, or move the file aside (evalsuite cache clear --cache-path {path} deletes it)"


def _digest(key: str, output_json: str) -> str:
    return hashlib.sha256(f"{key}\0{output_json}".encode()).hexdigest()[:16]


class CallCache:
    """Request key -> Output, persisted in `<cache_dir>/calls.sqlite`."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else default_cache_path()
        self.check_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
            _when_unlocked(self._db, self._prepare)
        except sqlite3.DatabaseError as exc:
            if _locked(exc):
                raise UsageError(f"call cache {self.path} stayed locked by another process for over "
                                 f"{BUSY_TIMEOUT_S + LOCKED_RETRY_S:.0f} s: {_fix(self.path)}") from None
            raise UsageError(f"call cache {self.path} is unreadable ({exc}): {_fix(self.path)}") from None
        self.hits = 0
        self.misses = 0
        self.damaged = 0
        self._writable = True

    def _prepare(self) -> None:
        """WAL mode and the table, safe to race: the schema is checked and changed in one write
        transaction, so two processes opening a new or old file at once cannot both add a column."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, output TEXT NOT NULL, created REAL, "
                         "digest TEXT)")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(calls)")}
        if "digest" not in columns:  # caches from before digests: their rows read as misses
            self._db.execute("ALTER TABLE calls ADD COLUMN digest TEXT")
        self._db.commit()

    @staticmethod
    def check_path(path: Path) -> None:
        """Fail before any model loads on a cache path that cannot be a cache file.

        A directory, a path below a file, an unwritable folder, or an existing file that is not
        SQLite (random bytes, a file given by mistake) each raise UsageError naming the fix.
        """
        path = Path(path)
        if path.is_dir():
            raise UsageError(f"--cache-path {path} is a directory: give a file path, e.g. {path / 'calls.sqlite'}")
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise UsageError(f"--cache-path {path}: {parent} is a file, not a folder; give a path in a folder")
                if not os.access(parent, os.W_OK | os.X_OK) and not path.exists():
                    raise UsageError(f"--cache-path {path}: cannot create files in {parent}; give a writable path or --no-cache")
                break
        if path.is_file():
            with path.open("rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
            if head and head != SQLITE_MAGIC:
                raise UsageError(f"call cache {path} is not an SQLite database (damaged or not a cache): {_fix(path)}")
            if not os.access(path, os.R_OK | os.W_OK):
                raise UsageError(f"call cache {path} is not readable and writable: fix its permissions or use --no-cache")

    def get_many(self, keys: list[str]) -> dict[str, Output]:
        found: dict[str, Output] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            try:
                rows = self._select(chunk)
            except sqlite3.DatabaseError:  # a damaged page: find which keys can still be read
                rows = []
                for key in chunk:
                    try:
                        rows += self._select([key])
                    except sqlite3.DatabaseError:
                        self._warn_damaged()
            for key, text, digest in rows:
                out = _parse(key, text, digest)
                if out is None:
                    self._warn_damaged()
                else:
                    found[key] = out
        self.hits += len(found)
        self.misses += len(set(keys)) - len(found)
        return found

    def _select(self, keys: list[str]) -> list[tuple[str, str, str | None]]:
        sql = f"SELECT key, output, digest FROM calls WHERE key IN ({','.join('?' * len(keys))})"
        return _when_unlocked(self._db, lambda: self._db.execute(sql, keys).fetchall())

    def _warn_damaged(self) -> None:
        self.damaged += 1
        if self.damaged == 1:
            print(f"evalsuite: warning: damaged entries in the call cache {self.path} are recomputed "
                  f"(evalsuite cache check --cache-path {self.path} reports them)", file=sys.stderr)

    def put(self, key: str, output: Output) -> None:
        """Store a successful output; errors are not cached so a re-run retries them."""
        if output.error is not None or not self._writable:
            return
        text = json.dumps(dataclasses.asdict(output))

        def write() -> None:
            self._db.execute("INSERT OR REPLACE INTO calls (key, output, created, digest) VALUES (?, ?, ?, ?)",
                             (key, text, time.time(), _digest(key, text)))
            self._db.commit()

        try:
            _when_unlocked(self._db, write)
        except sqlite3.DatabaseError as exc:  # the run's answers stay right; only resuming is lost
            self._writable = False
            print(f"evalsuite: warning: cannot write the call cache {self.path} ({exc}); this run goes on uncached: "
                  f"{_fix(self.path)}", file=sys.stderr)

    def flush(self) -> None:
        try:
            self._db.commit()
        except sqlite3.DatabaseError:
            pass  # put() has already said so

    def close(self) -> None:
        self.flush()
        self._db.close()


def _locked(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def _when_unlocked(db: sqlite3.Connection, step: Callable[[], T]) -> T:
    """Run `step`, retrying while another process holds a lock SQLite would not wait for.

    Backoff with jitter, so processes that collided do not collide again in step; any other
    error, or a lock that outlasts LOCKED_RETRY_S, goes to the caller."""
    deadline, delay = time.monotonic() + LOCKED_RETRY_S, 0.01
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if not _locked(exc) or time.monotonic() > deadline:
                raise
            if db.in_transaction:
                db.rollback()  # start again from a fresh snapshot
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)


def _parse(key: str, text: str, digest: str | None) -> Output | None:
    """The stored Output, or None when the row is damaged (bad digest, bad JSON, wrong fields)."""
    try:
        if digest != _digest(key, text):
            return None
        return Output(**json.loads(text))
    except (TypeError, ValueError, UnicodeError):
        return None


class NullCache(CallCache):
    """`--no-cache`: remembers nothing."""

    def __init__(self) -> None:  # noqa: D107 - no database
        self.hits = 0
        self.misses = 0
        self.damaged = 0

    def get_many(self, keys: list[str]) -> dict[str, Output]:
        self.misses += len(set(keys))
        return {}

    def put(self, key: str, output: Output) -> None:
        return None

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


# ---------------------------------------------------------------- `evalsuite cache check|clear`
@dataclasses.dataclass
class CacheReport:
    path: Path
    exists: bool
    entries: int = 0
    damaged: int = 0  # rows that would be recomputed
    problems: list[str] = dataclasses.field(default_factory=list)  # SQLite's integrity_check findings

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.problems

    def summary(self) -> str:
        if not self.exists:
            return f"{self.path}: no call cache here"
        if self.ok:
            return f"{self.path}: ok, {self.entries} entries"
        found = "; ".join(self.problems[:3]) or f"{self.damaged} damaged entries"
        return (f"{self.path}: damaged ({found}); {self.entries} entries readable, {self.damaged} damaged entries are "
                f"recomputed when asked for: evalsuite cache clear --cache-path {self.path} starts afresh")


def check(path: Path | None = None) -> CacheReport:
    """Read every row of the cache file: how many are usable, how many damaged, what SQLite finds."""
    path = Path(path) if path else default_cache_path()
    if not path.exists():
        return CacheReport(path, exists=False)
    report = CacheReport(path, exists=True)
    try:
        CallCache.check_path(path)
        db = sqlite3.connect(path, timeout=30)  # reads only; plain mode so a WAL file is read too
    except (UsageError, sqlite3.DatabaseError) as exc:
        report.problems.append(str(exc))
        return report
    try:
        found = [row[0] for row in db.execute("PRAGMA integrity_check")]
        report.problems += [p for p in found if p != "ok"]
        try:
            rows = db.execute("SELECT key, output, digest FROM calls")
            for key, text, digest in rows:
                if _parse(key, text, digest) is None:
                    report.damaged += 1
                else:
                    report.entries += 1
        except sqlite3.DatabaseError as exc:
            report.problems.append(f"reading rows stopped: {exc}")
    except sqlite3.DatabaseError as exc:
        report.problems.append(str(exc))
    finally:
        db.close()
    return report


def clear(path: Path | None = None) -> list[Path]:
    """Delete the cache file and its WAL/shared-memory companions; returns what was removed."""
    path = Path(path) if path else default_cache_path()
    if path.is_dir():
        raise UsageError(f"--cache-path {path} is a directory, not a cache file: name the file (e.g. {path / 'calls.sqlite'})")
    removed = []
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.is_file():
            p.unlink()
            removed.append(p)
    return removed


def configure(parser: argparse.ArgumentParser) -> None:
    """The `evalsuite cache` subcommand's arguments: `check` or `clear`, and `--cache-path`."""
    parser.add_argument("cache_command", choices=("check", "clear"),
                        help="check: read every entry and report damage; clear: delete the cache file")
    parser.add_argument("--cache-path", default=None,
                        help=f"the cache file (default: {default_cache_path()}, or $EVALSUITE_CACHE_DIR/calls.sqlite)")


def main(args: argparse.Namespace) -> int:
    """`evalsuite cache check` exits 0 when the cache is whole, 1 when damaged; `clear` exits 0."""
    path = Path(args.cache_path).expanduser() if args.cache_path else default_cache_path()
    if args.cache_command == "clear":
        removed = clear(path)
        print(f"removed {', '.join(map(str, removed))}" if removed else f"{path}: no call cache here")
        return 0
    report = check(path)
    print(report.summary())
    return 0 if report.ok else 1


configure_cache, run_cache = configure, main  # `evalsuite cache` (delegated by evalsuite/cli.py)
