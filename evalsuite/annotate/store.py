"""One annotation project in one SQLite file (WAL): its settings, its items and every judgment.

Each thread keeps its own connection, so the web server's threads, several annotators and a second
process (export while serving) can use the file at once; writes run in `BEGIN IMMEDIATE`
transactions, and a partial unique index allows one live judgment per (item, annotator), so a
double click, two tabs or a retried request can never count a vote twice. Undo marks a row
undone instead of deleting it: nothing an annotator did is ever lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError

MODES = ("pairwise", "likert", "ranking")
CHOICES = ("A", "B", "tie", "both_bad")
DEFAULT_CRITERIA = ("helpfulness", "accuracy", "relevance", "completeness")
STORE_FORMAT = 1
MARK = "evalsuite-annotate"  # in the meta table: tells our stores from any other SQLite file

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY, position INTEGER NOT NULL, key TEXT NOT NULL UNIQUE, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS views (
    item_id INTEGER NOT NULL, annotator TEXT NOT NULL, shown_at REAL NOT NULL, PRIMARY KEY (item_id, annotator));
CREATE TABLE IF NOT EXISTS judgments (
    id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id), annotator TEXT NOT NULL,
    kind TEXT NOT NULL, verdict TEXT, result TEXT, shown TEXT NOT NULL, shown_at REAL, submitted_at REAL NOT NULL,
    elapsed_ms INTEGER, undone INTEGER NOT NULL DEFAULT 0, undone_at REAL);
CREATE UNIQUE INDEX IF NOT EXISTS one_live_judgment ON judgments(item_id, annotator) WHERE undone = 0;
"""


class Conflict(UsageError):
    """The action clashes with what is stored (already judged, nothing to undo): HTTP 409."""


class Invalid(UsageError):
    """A malformed verdict or unknown item: HTTP 400."""


def fingerprint(project: dict[str, Any], items: list[dict[str, Any]]) -> str:
    """What makes two projects the same: mode, criteria, labels and every item's content."""
    blob = json.dumps({k: project.get(k) for k in ("mode", "criteria", "labels")} | {"items": items},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class Store:
    """An annotation project on disk. Use `Store.create` for a new or resumed project, `Store(path)` to open one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        if not self.path.is_file():
            raise UsageError(f"annotation store {self.path} does not exist; start a project with "
                             "`evalsuite annotate RUN [RUN ...]` or pass the right --store")
        try:
            with self._connect() as db:
                rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            raise UsageError(f"{self.path} is not an annotation store (not an evalsuite annotate SQLite file); "
                             "pass another --store") from None
        if rows.get("format") is None or json.loads(rows.get("project", "{}")).get("mark") != MARK:
            raise UsageError(f"{self.path} is not an annotation store (no evalsuite annotate project in it); "
                             "pass another --store")
        if int(rows["format"]) > STORE_FORMAT:
            raise UsageError(f"{self.path} was written by a newer evalsuite (store format {rows['format']}); upgrade")
        self.project: dict[str, Any] = json.loads(rows["project"])

    # ------------------------------------------------------------------ creating
    @classmethod
    def create(cls, path: str | Path, project: dict[str, Any], items: list[dict[str, Any]], seed: int = 0) -> Store:
        """A new store, or the existing one when it holds this same project (resume); else a `UsageError`."""
        path = Path(path)
        if project.get("mode") not in MODES:
            raise UsageError(f"unknown mode {project.get('mode')!r}: use one of {', '.join(MODES)}")
        if not items:
            raise UsageError("nothing to annotate: the project has no items")
        fp = fingerprint(project, items)
        if path.exists():
            store = cls(path)
            if store.project.get("fingerprint") != fp:
                raise UsageError(
                    f"{path} holds another annotation project ('{store.project.get('name')}', "
                    f"{store.project.get('mode')}, {store.project.get('n_items')} items from "
                    f"{', '.join(store.project.get('sources', [])) or '?'}); pass a new --store for this one")
            return store
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**project, "mark": MARK, "id": uuid.uuid4().hex, "fingerprint": fp, "n_items": len(items),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        order = list(range(len(items)))
        random.Random(seed).shuffle(order)  # every annotator sees the same shuffled order (overlap for agreement)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")  # stored in the file: readers never block the writer
                db.executescript(SCHEMA)
                db.execute("BEGIN")
                db.executemany("INSERT INTO meta VALUES (?, ?)",
                               [("format", str(STORE_FORMAT)), ("project", json.dumps(meta, ensure_ascii=False))])
                db.executemany("INSERT INTO items (position, key, data) VALUES (?, ?, ?)",
                               [(pos, items[i]["key"], json.dumps(items[i], ensure_ascii=False))
                                for pos, i in enumerate(order)])
                db.execute("COMMIT")
            finally:
                db.close()
            tmp.replace(path)  # a half-built store never appears under the real name
        except sqlite3.IntegrityError as exc:
            raise UsageError(f"two items share one id ({exc}); give every item a unique id") from None
        finally:
            tmp.unlink(missing_ok=True)
        return cls(path)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, kept open: closing the last one checkpoints the WAL (~6 ms a call)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        yield db

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time: check-then-insert cannot interleave
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ reading
    @property
    def mode(self) -> str:
        return str(self.project["mode"])

    def items(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT id, data FROM items ORDER BY position").fetchall()
        return [{"id": i, **json.loads(d)} for i, d in rows]

    def item(self, item_id: int) -> dict[str, Any]:
        with self._connect() as db:
            row = db.execute("SELECT data FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise Invalid(f"no item {item_id} in this project")
        return {"id": item_id, **json.loads(row[0])}

    def shown_order(self, item: dict[str, Any], annotator: str) -> list[int]:
        """The order the answers are shown in: random per item and annotator, the same on every reload."""
        order = list(range(len(item["answers"])))
        seed = hashlib.sha256(f"{self.project['id']}|{item['key']}|{annotator}".encode()).hexdigest()
        random.Random(seed).shuffle(order)
        return order

    def next_item(self, annotator: str) -> dict[str, Any] | None:
        """The first item this annotator has not judged; skipped ones come back once the rest are done."""
        annotator = check_annotator(annotator)
        with self._connect() as db:
            row = db.execute(
                "SELECT id FROM items i WHERE NOT EXISTS (SELECT 1 FROM judgments j WHERE j.item_id = i.id "
                "AND j.annotator = ? AND j.undone = 0) ORDER BY position LIMIT 1", (annotator,)).fetchone()
            skipped = False
            if row is None:
                row = db.execute("SELECT item_id FROM judgments WHERE annotator = ? AND undone = 0 AND kind = 'skip' "
                                 "ORDER BY submitted_at, id LIMIT 1", (annotator,)).fetchone()
                skipped = row is not None
            if row is None:
                return None
            db.execute("INSERT OR IGNORE INTO views VALUES (?, ?, ?)", (row[0], annotator, time.time()))
        item = self.item(row[0])
        return {**item, "order": self.shown_order(item, annotator), "skipped_before": skipped}

    def progress(self, annotator: str | None = None) -> dict[str, Any]:
        with self._connect() as db:
            per = db.execute("SELECT annotator, SUM(kind = 'judgment'), SUM(kind = 'skip') FROM judgments "
                             "WHERE undone = 0 GROUP BY annotator ORDER BY annotator").fetchall()
        annotators = {a: {"done": int(d or 0), "skipped": int(s or 0)} for a, d, s in per}
        out: dict[str, Any] = {"total": int(self.project["n_items"]), "annotators": annotators}
        if annotator is not None:
            out.update(annotators.get(annotator, {"done": 0, "skipped": 0}))
        return out

    def judgments(self, include_undone: bool = False, kind: str | None = "judgment") -> list[dict[str, Any]]:
        """Every stored row (live ones by default), with its item key, oldest first."""
        sql = ("SELECT j.id, j.item_id, i.key, j.annotator, j.kind, j.verdict, j.result, j.shown, j.shown_at, "
               "j.submitted_at, j.elapsed_ms, j.undone FROM judgments j JOIN items i ON i.id = j.item_id WHERE 1=1")
        if not include_undone:
            sql += " AND j.undone = 0"
        if kind is not None:
            sql += f" AND j.kind = '{kind}'" if kind in ("judgment", "skip") else ""
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY j.id").fetchall()
        cols = ("id", "item_id", "item", "annotator", "kind", "verdict", "result", "shown", "shown_at",
                "submitted_at", "elapsed_ms", "undone")
        out = []
        for row in rows:
            d = dict(zip(cols, row))
            for k in ("verdict", "result", "shown"):
                d[k] = json.loads(d[k]) if d[k] is not None else None
            d["undone"] = bool(d["undone"])
            out.append(d)
        return out

    # ------------------------------------------------------------------ writing
    def submit(self, annotator: str, item_id: int, verdict: dict[str, Any], elapsed_ms: int | None = None) -> int:
        """Store one judgment (replacing this annotator's skip of the item); `Conflict` if already judged."""
        annotator = check_annotator(annotator)
        item = self.item(item_id)
        order = self.shown_order(item, annotator)
        shown = [item["answers"][i]["model"] for i in order]
        clean, result = validate(self.project, verdict, shown)
        return self._insert(annotator, item_id, "judgment", clean, result, shown, elapsed_ms)

    def skip(self, annotator: str, item_id: int) -> int:
        annotator = check_annotator(annotator)
        item = self.item(item_id)
        shown = [item["answers"][i]["model"] for i in self.shown_order(item, annotator)]
        return self._insert(annotator, item_id, "skip", None, None, shown, None)

    def _insert(self, annotator: str, item_id: int, kind: str, verdict: Any, result: Any, shown: list[str],
                elapsed_ms: int | None) -> int:
        now = time.time()
        if elapsed_ms is not None and (isinstance(elapsed_ms, bool) or not isinstance(elapsed_ms, int) or elapsed_ms < 0):
            raise Invalid(f"elapsed_ms must be a whole number of milliseconds >= 0, got {elapsed_ms!r}")
        try:
            return self._insert_row(annotator, item_id, kind, verdict, result, shown, elapsed_ms, now)
        except sqlite3.IntegrityError:  # the unique index: a second live row for this item and annotator
            raise Conflict(f"{annotator} has already judged item {item_id}; undo it first to change it") from None

    def _insert_row(self, annotator: str, item_id: int, kind: str, verdict: Any, result: Any, shown: list[str],
                    elapsed_ms: int | None, now: float) -> int:
        with self._write() as db:
            live = db.execute("SELECT id, kind FROM judgments WHERE item_id = ? AND annotator = ? AND undone = 0",
                              (item_id, annotator)).fetchone()
            if live is not None and (live[1] == "judgment" or kind == "skip"):
                raise Conflict(f"{annotator} has already {'judged' if live[1] == 'judgment' else 'skipped'} "
                               f"item {item_id}; undo it first to change it")
            if live is not None:  # a judgment for a skipped item replaces the skip (kept, marked undone)
                db.execute("UPDATE judgments SET undone = 1, undone_at = ? WHERE id = ?", (now, live[0]))
            view = db.execute("SELECT shown_at FROM views WHERE item_id = ? AND annotator = ?",
                              (item_id, annotator)).fetchone()
            shown_at = view[0] if view else None
            if elapsed_ms is None and shown_at is not None:
                elapsed_ms = int((now - shown_at) * 1000)
            cur = db.execute(
                "INSERT INTO judgments (item_id, annotator, kind, verdict, result, shown, shown_at, submitted_at, "
                "elapsed_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (item_id, annotator, kind, None if verdict is None else json.dumps(verdict, ensure_ascii=False),
                 None if result is None else json.dumps(result, ensure_ascii=False), json.dumps(shown), shown_at, now,
                 elapsed_ms))
            db.execute("DELETE FROM views WHERE item_id = ? AND annotator = ?", (item_id, annotator))
            return int(cur.lastrowid or 0)

    def undo(self, annotator: str) -> int:
        """Take back this annotator's latest judgment or skip; returns its item id."""
        annotator = check_annotator(annotator)
        with self._write() as db:
            row = db.execute("SELECT id, item_id FROM judgments WHERE annotator = ? AND undone = 0 "
                             "ORDER BY submitted_at DESC, id DESC LIMIT 1", (annotator,)).fetchone()
            if row is None:
                raise Conflict(f"{annotator} has nothing to undo")
            db.execute("UPDATE judgments SET undone = 1, undone_at = ? WHERE id = ?", (time.time(), row[0]))
            return int(row[1])


def check_annotator(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise Invalid("annotator must be a non-empty name of at most 100 characters")
    return name.strip()


def validate(project: dict[str, Any], verdict: Any, shown: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The verdict as clicked (slots as shown) and its meaning in model names; `Invalid` when malformed."""
    if not isinstance(verdict, dict):
        raise Invalid("verdict must be a JSON object")
    mode = project["mode"]
    if mode == "pairwise":
        choice = verdict.get("choice")
        if choice not in CHOICES:
            raise Invalid(f"pairwise verdict 'choice' must be one of {', '.join(CHOICES)}, got {choice!r}")
        winner = {"A": shown[0], "B": shown[1]}.get(choice)
        models = sorted(shown)  # value is for the first model in name order, whatever side it was shown on
        value = 0.5 if winner is None else float(winner == models[0])
        return {"choice": choice}, {"models": models, "winner": winner, "value": value, "outcome": choice
                                    if choice in ("tie", "both_bad") else "win"}
    if mode == "likert":
        criteria, labels = list(project.get("criteria") or []), list(project.get("labels") or [])
        scores = verdict.get("scores") or {}
        if not isinstance(scores, dict) or set(scores) != set(criteria):
            raise Invalid(f"likert verdict needs 'scores' for exactly these criteria: {', '.join(criteria)}")
        for name, value in scores.items():
            if isinstance(value, bool) or value not in (1, 2, 3, 4, 5):
                raise Invalid(f"score for '{name}' must be a whole number from 1 to 5, got {value!r}")
        label = verdict.get("label")
        if labels and label not in labels:
            raise Invalid(f"verdict 'label' must be one of {', '.join(labels)}, got {label!r}")
        comment = verdict.get("comment") or ""
        if not isinstance(comment, str) or len(comment) > 10000:
            raise Invalid("comment must be text of at most 10000 characters")
        clean = {"scores": {k: int(v) for k, v in scores.items()}, "comment": comment,
                 **({"label": label} if labels else {})}
        return clean, {"model": shown[0], **clean}
    ranking = verdict.get("ranking")
    letters = [chr(65 + i) for i in range(len(shown))]
    if not isinstance(ranking, list) or sorted(map(str, ranking)) != letters:
        raise Invalid(f"ranking verdict must order every answer once, best first, e.g. {letters}")
    return {"ranking": ranking}, {"ranking": [shown[letters.index(s)] for s in ranking]}
