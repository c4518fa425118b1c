"""The call cache is shared by processes (a trainer's checkpoint scorers and a run write at once),
and a damaged cache file costs recomputation, never a crash or a wrong answer."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from evalsuite import cache as cache_mod
from evalsuite.cache import CallCache
from evalsuite.errors import UsageError
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


# ---------------------------------------------------------------- damaged caches and bad paths
def _filled(path: Path, n: int = 300) -> dict[str, Output]:
    """A cache with n entries big enough to span many SQLite pages; returns what was stored."""
    stored = {f"key-{i:04d}": Output(texts=[f"answer {i} " + "x" * 200], tokens_in=i) for i in range(n)}
    c = CallCache(path)
    for k, v in stored.items():
        c.put(k, v)
    c._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file
    c.close()
    return stored


def test_random_bytes_cache_file_stops_before_use_naming_file_and_fix(tmp_path: Path) -> None:
    """Catches a corrupt cache file surfacing as sqlite3's 'file is not a database' traceback mid-run."""
    bad = tmp_path / "calls.sqlite"
    bad.write_bytes(os.urandom(8192))
    for attempt in (lambda: CallCache.check_path(bad), lambda: CallCache(bad)):
        with pytest.raises(UsageError) as err:
            attempt()
        msg = str(err.value)
        assert str(bad) in msg and "--no-cache" in msg and "move the file aside" in msg and "\n" not in msg
    bad.unlink()
    _filled(bad, n=3)
    data = bytearray(bad.read_bytes())
    data[16:100] = b"\xff" * 84  # SQLite's magic intact, the rest of its header damaged
    bad.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="is unreadable .*--no-cache"):
        CallCache(bad)


def test_cli_exits_2_with_one_line_on_a_corrupt_cache(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Catches the CLI printing a traceback (or exit 1) for a cache file of random bytes."""
    from tests.conftest import write_mmlu

    bad = tmp_path / "calls.sqlite"
    bad.write_bytes(os.urandom(4096))
    data = write_mmlu(tmp_path / "data", n_test=1)
    proc = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--model", str(tiny_model_dir), "--tasks", "mmlu",
                           "--limit", "1", "--data-dir", str(data), "--output-dir", str(tmp_path / "runs"),
                           "--cache-path", str(bad)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.startswith("evalsuite: error")]
    assert len(lines) == 1 and str(bad) in lines[0] and "--no-cache" in lines[0]
    assert "Traceback" not in proc.stderr


def test_damaged_pages_are_misses_never_a_crash_or_a_wrong_answer(tmp_path: Path) -> None:
    """Catches get_many raising 'database disk image is malformed', or serving bytes that changed."""
    path = tmp_path / "calls.sqlite"
    stored = _filled(path)
    size = path.stat().st_size
    with path.open("r+b") as fh:  # overwrite pages in the middle of the file (not the header page)
        for offset in range(size // 3, 2 * size // 3, 4096 * 3):
            fh.seek(offset)
            fh.write(os.urandom(600))
    c = CallCache(path)
    found = c.get_many(list(stored))
    assert 0 < len(found) < len(stored)  # some rows survive, the damaged ones miss
    assert all(out == stored[k] for k, out in found.items())  # never a wrong answer
    assert c.damaged > 0 and c.misses == len(stored) - len(found)
    for k, v in stored.items():  # the run stores its recomputed answers: a damaged page must not crash it
        c.put(k, v)
    c.close()
    report = cache_mod.check(path)
    assert not report.ok and str(path) in report.summary()


def test_truncated_or_altered_stored_outputs_are_misses(tmp_path: Path) -> None:
    """Catches a row whose JSON was cut short crashing Output(**...), and an edited row being served.

    The second half is what the digest is for: valid JSON with a changed answer must not be read.
    """
    path = tmp_path / "calls.sqlite"
    stored = _filled(path, n=6)
    db = sqlite3.connect(path)
    db.execute("UPDATE calls SET output = substr(output, 1, 25) WHERE key IN ('key-0000', 'key-0001')")
    db.execute("UPDATE calls SET output = replace(output, 'answer 2', 'answer 9') WHERE key = 'key-0002'")
    newer = '{"texts": ["a"], "field_of_a_newer_version": 1}'  # a whole row whose fields this Output lacks
    db.execute("UPDATE calls SET output = ?, digest = ? WHERE key = 'key-0003'", (newer, cache_mod._digest("key-0003", newer)))
    db.commit()
    db.close()
    c = CallCache(path)
    found = c.get_many(list(stored))
    assert sorted(found) == ["key-0004", "key-0005"] and all(found[k] == stored[k] for k in found)
    c.put("key-0000", stored["key-0000"])  # recomputed: the damaged row is replaced
    assert c.get_many(["key-0000"])["key-0000"] == stored["key-0000"]
    c.close()
    report = cache_mod.check(path)
    assert (report.entries, report.damaged) == (3, 3) and not report.ok


def test_cache_path_that_is_a_directory_or_under_a_file(tmp_path: Path) -> None:
    """Catches a cache path that can never be a file failing only after the model has loaded."""
    with pytest.raises(UsageError, match="is a directory"):
        CallCache.check_path(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        CallCache.check_path(tmp_path / "f" / "calls.sqlite")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        CallCache(tmp_path / "f" / "sub" / "calls.sqlite")
    CallCache.check_path(tmp_path / "new" / "calls.sqlite")  # a folder to be made is fine


def test_cache_check_and_clear_commands(tmp_path: Path, capsys) -> None:
    """Catches `evalsuite cache check` calling a damaged file whole, and `clear` leaving the WAL behind."""
    import argparse

    parser = argparse.ArgumentParser()
    cache_mod.configure(parser)
    path = tmp_path / "calls.sqlite"
    _filled(path, n=3)
    assert cache_mod.main(parser.parse_args(["check", "--cache-path", str(path)])) == 0
    assert "ok, 3 entries" in capsys.readouterr().out
    path.write_bytes(os.urandom(2048))
    assert cache_mod.main(parser.parse_args(["check", "--cache-path", str(path)])) == 1
    assert "damaged" in capsys.readouterr().out
    (tmp_path / "calls.sqlite-wal").write_bytes(b"")
    assert cache_mod.main(parser.parse_args(["clear", "--cache-path", str(path)])) == 0
    assert not path.exists() and not (tmp_path / "calls.sqlite-wal").exists()
    CallCache(path).close()  # a fresh cache where the damaged one was
