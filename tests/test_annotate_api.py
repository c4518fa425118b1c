"""`evalsuite annotate`'s JSON API over real HTTP on 127.0.0.1, its store, CLI errors and the export.

A uvicorn server runs in a thread on a free port for each store; runs are written by the real
writer (`tests.fixtures_runs.write_run`, `RunWriter`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from evalsuite import rundir, runlog
from evalsuite.annotate import human_battles
from evalsuite.annotate.app import bind, create_app, server
from evalsuite.annotate.cli import configure, run
from evalsuite.annotate.export import write_export
from evalsuite.annotate.store import Store
from evalsuite.errors import UsageError
from evalsuite.records import GenerateRequest, Output, Sample, SampleRecord, Score
from tests.fixtures_runs import SynthTask, write_run

OUTPUTS = {
    "model-a": ["**Paris** is the capital.\n\n```python\nprint('<b>hi</b>')\n```", "<script>alert(1)</script>four",
                "Answer: <img src=x onerror=alert(2)>", "[click](javascript:alert(3)) plain", "- one\n- two"],
    "model-b": ["Lyon, I think.", "4", "It is 7 & <i>that</i>.", "Nope.", "| a | b |\n|---|---|\n| 1 | 2 |"],
    "model-c": ["Marseille.", "five", "eight", "?", "1. first\n2. second"],
}


def make_runs(tmp: Path, n: int = 5, models: tuple[str, ...] = ("model-a", "model-b")) -> list[Path]:
    """Runs of one task with the same sample ids: tricky Markdown, HTML and links in the answers."""
    paths = []
    for m in models:
        outs = [OUTPUTS[m][i % 5] + (f"\n\n(variant {i})" if i >= 5 else "") for i in range(n)]
        paths.append(write_run(tmp / m, {"qa": SynthTask({"acc": [1.0] * n}, outputs=outs)}, model=m))
    return paths


def multi_turn_run(tmp: Path, model: str, n: int = 3) -> Path:
    """An MT-Bench-like run: two user turns per sample, one output per turn, written by RunWriter."""
    results = runlog.RunResults(kind="eval", model=runlog.ModelInfo(name=model), created="2025-01-01T00:00:00+0000")
    path = tmp / f"mt-{model}"
    path.mkdir(parents=True)
    writer = rundir.RunWriter(path, results)
    records = []
    for i in range(n):
        turns = [f"Write a haiku about {i}.", "Now make it rhyme."]
        sample = Sample(str(81 + i), turns[0], metadata={"turns": turns, "category": "writing"})
        outs = [Output(texts=[f"{model} haiku {i}"]), Output(texts=[f"{model} rhyme {i}"])]
        records.append(SampleRecord("mt_bench", sample, [GenerateRequest(prompt=t) for t in turns], outs,
                                    Score({"score": 5.0})))
    writer.add_task("mt_bench", runlog.TaskResult(n=n), records)
    writer.finish("complete")
    return path


@contextlib.contextmanager
def serving(store: Store, token: str | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """The app on a free port of `host`, in a thread; yields its base URL."""
    sock = bind(host, 0)
    srv = server(create_app(store, token=token, host=host), sock)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if srv.started:
            break
        threading.Event().wait(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


def new_store(tmp: Path, mode: str = "pairwise", n: int = 5, **project: object) -> Store:
    from evalsuite.annotate import sources

    models = ("model-a", "model-b", "model-c") if mode == "ranking" else ("model-a", "model-b")
    items, origin = sources.from_runs([str(p) for p in make_runs(tmp, n, models)], mode)
    criteria = ["helpfulness", "accuracy"] if mode == "likert" else []
    return Store.create(tmp / "store.sqlite", {"name": "qa", "mode": mode, "criteria": criteria, "labels": [],
                                               **origin, **project}, items)


def cli(*argv: str) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    configure(parser)
    return run(parser.parse_args(list(argv)))


# ---------------------------------------------------------------------------- the API
def test_pairwise_api_round_trip_and_export(tmp_path: Path) -> None:
    """next/submit/undo/progress/export over HTTP: the export and the arena battles equal what was submitted,
    with each verdict mapped through the side the model was shown on."""
    store = new_store(tmp_path)
    clicked = {}
    with serving(store) as url, httpx.Client(base_url=url) as c:
        p = c.get("/api/project").json()
        assert p["mode"] == "pairwise" and p["n_items"] == 5
        for n, choice in enumerate(["A", "B", "tie", "both_bad", "A"]):
            item = c.get("/api/next", params={"annotator": "ann"}).json()["item"]
            assert [a["slot"] for a in item["answers"]] == ["A", "B"]
            assert "model-a" not in json.dumps(item) and "model-b" not in json.dumps(item), "model names are hidden"
            r = c.post("/api/submit", json={"annotator": "ann", "item": item["id"], "verdict": {"choice": choice},
                                            "elapsed_ms": 1500 + n})
            assert r.status_code == 200, r.text
            clicked[item["id"]] = choice
        assert c.get("/api/next", params={"annotator": "ann"}).json()["item"] is None
        assert c.get("/api/progress", params={"annotator": "ann"}).json()["done"] == 5
        exported = c.get("/api/export").json()
    rows = exported["judgments"]
    assert {r["item_id"]: r["verdict"]["choice"] for r in rows} == clicked
    assert [r["elapsed_ms"] for r in rows] == [1500, 1501, 1502, 1503, 1504]
    expected = []
    for r in rows:
        left, right = r["shown"]
        winner = {"A": left, "B": right}.get(r["verdict"]["choice"])
        expected.append(("model-a", "model-b", 0.5 if winner is None else float(winner == "model-a")))
    assert human_battles(store.path) == expected
    out = write_export(store, tmp_path / "runs", n_boot=50)
    log = rundir.load_run(out)
    assert log.results.kind == "human" and log.results.human is not None
    h = log.results.human
    assert h.mode == "pairwise" and h.annotators == ["ann"] and h.judgments == 5
    wr = h.win_rates["model-a vs model-b"]  # type: ignore[attr-defined]
    assert wr["n"] == 5 and wr["win_rate_a"] == pytest.approx(sum(v for *_, v in expected) / 5)
    assert wr["ties"] == 1 and wr["both_bad"] == 1 and wr["lo"] <= wr["win_rate_a"] <= wr["hi"]
    assert len(log.records) == 5 and {r.sample.metadata["annotator"] for r in log.records} == {"ann"}


def test_duplicate_and_concurrent_submissions_count_once(tmp_path: Path) -> None:
    """Twenty simultaneous submissions of one verdict (double clicks, two tabs) store exactly one vote."""
    store = new_store(tmp_path)
    with serving(store) as url:
        item = httpx.get(f"{url}/api/next", params={"annotator": "ann"}).json()["item"]
        codes: list[int] = []

        def post() -> None:
            r = httpx.post(f"{url}/api/submit", json={"annotator": "ann", "item": item["id"],
                                                      "verdict": {"choice": "A"}}, timeout=30)
            codes.append(r.status_code)

        threads = [threading.Thread(target=post) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes) == [200] + [409] * 19
        r = httpx.post(f"{url}/api/submit", json={"annotator": "ann", "item": item["id"], "verdict": {"choice": "B"}})
        assert r.status_code == 409 and "undo it first" in r.json()["error"]
    assert len(store.judgments()) == 1


def test_undo_skip_resume_and_closed_browser(tmp_path: Path) -> None:
    """An item shown but never answered (browser closed) comes back with the same sides; undo brings the
    last judgment back and keeps the undone row; a skipped item returns after the others."""
    store = new_store(tmp_path, n=3)
    with serving(store) as url, httpx.Client(base_url=url) as c:
        def nxt() -> dict:
            return c.get("/api/next", params={"annotator": "bob"}).json()["item"]

        first = nxt()
        assert nxt() == first, "a reload shows the same item in the same order"
        assert c.post("/api/skip", json={"annotator": "bob", "item": first["id"]}).status_code == 200
        second = nxt()
        assert second["id"] != first["id"]
        c.post("/api/submit", json={"annotator": "bob", "item": second["id"], "verdict": {"choice": "B"}})
        r = c.post("/api/undo", json={"annotator": "bob"}).json()
        assert r["item"] == second["id"] and r["progress"]["done"] == 0
        assert nxt()["id"] == second["id"]
        c.post("/api/submit", json={"annotator": "bob", "item": second["id"], "verdict": {"choice": "A"}})
        third = nxt()
        c.post("/api/submit", json={"annotator": "bob", "item": third["id"], "verdict": {"choice": "tie"}})
        again = nxt()
        assert again["id"] == first["id"] and again["skipped_before"] and again["answers"] == first["answers"]
        c.post("/api/submit", json={"annotator": "bob", "item": first["id"], "verdict": {"choice": "A"}})
        assert nxt() is None
        assert c.get("/api/progress", params={"annotator": "bob"}).json() | {} == {
            "total": 3, "annotators": {"bob": {"done": 3, "skipped": 0}}, "done": 3, "skipped": 0}
        assert c.post("/api/undo", json={"annotator": "nobody"}).status_code == 409
    every = store.judgments(include_undone=True, kind=None)
    assert len(every) == 5 and sum(r["undone"] for r in every) == 2  # the B vote and the skip are kept, undone
    assert [r["verdict"]["choice"] for r in store.judgments()] == ["A", "tie", "A"]


def test_bad_requests_are_400_with_a_message(tmp_path: Path) -> None:
    """Unknown verdicts, empty annotator names, unknown items, non-JSON bodies: 400 with a message, nothing stored."""
    store = new_store(tmp_path, n=2)
    with serving(store) as url, httpx.Client(base_url=url) as c:
        item = c.get("/api/next", params={"annotator": "ann"}).json()["item"]["id"]
        for body, words in [({"annotator": "ann", "item": item, "verdict": {"choice": "C"}}, "must be one of"),
                            ({"annotator": "", "item": item, "verdict": {"choice": "A"}}, "annotator"),
                            ({"annotator": "ann", "item": 999, "verdict": {"choice": "A"}}, "no item 999"),
                            ({"annotator": "ann", "item": "1", "verdict": {"choice": "A"}}, "whole number")]:
            r = c.post("/api/submit", json=body)
            assert r.status_code == 400 and words in r.json()["error"], r.text
        r = c.post("/api/submit", content=b"not json", headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert c.get("/api/next", params={"annotator": ""}).status_code == 400
    assert store.judgments() == []


def test_security_headers_token_and_host_check(tmp_path: Path) -> None:
    """The page sends a CSP that forbids inline and foreign scripts; model HTML arrives escaped; a token
    guards the API; a foreign Host header (DNS rebinding) is refused on loopback."""
    store = new_store(tmp_path)
    with serving(store) as url:
        page = httpx.get(url + "/")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert httpx.get(url + "/static/app.js").headers["content-security-policy"] == csp
        c = httpx.Client(base_url=url)
        seen = ""
        for _ in range(5):
            it = c.get("/api/next", params={"annotator": "x"}).json()["item"]
            seen += json.dumps(it)
            c.post("/api/submit", json={"annotator": "x", "item": it["id"], "verdict": {"choice": "A"}})
        assert "<script" not in seen and "&lt;script&gt;" in seen and "<img" not in seen
        assert 'href=\\"javascript' not in seen and "[click](javascript:alert(3))" in seen  # shown as text only
        assert httpx.get(f"{url}/api/project", headers={"host": "evil.example"}).status_code == 400
    with serving(store, token="s3cret") as url:
        assert httpx.get(f"{url}/api/project").status_code == 401
        assert httpx.get(f"{url}/api/project", headers={"x-annotate-token": "wrong"}).status_code == 401
        assert httpx.get(f"{url}/api/project", headers={"x-annotate-token": "s3cret"}).status_code == 200
    with pytest.raises(UsageError, match="--token"):
        create_app(store, host="0.0.0.0")


def test_likert_and_ranking_verdicts(tmp_path: Path) -> None:
    """Likert needs a 1-5 score for every criterion; ranking must order every answer once; both map to models."""
    lik = new_store(tmp_path / "l", mode="likert", n=2)
    with serving(lik) as url, httpx.Client(base_url=url) as c:
        item = c.get("/api/next", params={"annotator": "a"}).json()["item"]
        bad = c.post("/api/submit", json={"annotator": "a", "item": item["id"], "verdict": {"scores": {"helpfulness": 6,
                                                                                               "accuracy": 2}}})
        assert bad.status_code == 400 and "1 to 5" in bad.json()["error"]
        missing = c.post("/api/submit", json={"annotator": "a", "item": item["id"], "verdict": {"scores": {"accuracy": 2}}})
        assert missing.status_code == 400 and "helpfulness" in missing.json()["error"]
        ok = c.post("/api/submit", json={"annotator": "a", "item": item["id"],
                                         "verdict": {"scores": {"helpfulness": 4, "accuracy": 2}, "comment": "fine"}})
        assert ok.status_code == 200
    summary = rundir.load_run(write_export(lik, tmp_path / "out", n_boot=20)).results.human
    assert summary.likert["helpfulness"]["mean"] == 4.0  # type: ignore[attr-defined]
    rank = new_store(tmp_path / "r", mode="ranking", n=2)
    with serving(rank) as url, httpx.Client(base_url=url) as c:
        item = c.get("/api/next", params={"annotator": "a"}).json()["item"]
        assert len(item["answers"]) == 3
        assert c.post("/api/submit", json={"annotator": "a", "item": item["id"],
                                           "verdict": {"ranking": ["A", "A", "B"]}}).status_code == 400
        assert c.post("/api/submit", json={"annotator": "a", "item": item["id"],
                                           "verdict": {"ranking": ["C", "A", "B"]}}).status_code == 200
    j = rank.judgments()[0]
    assert j["result"]["ranking"] == [j["shown"][2], j["shown"][0], j["shown"][1]]
    first, second, third = j["result"]["ranking"]
    assert human_battles(rank.path) == [(first, second, 1.0), (first, third, 1.0), (second, third, 1.0)]


def test_multi_turn_answers_are_shown_as_turns(tmp_path: Path) -> None:
    """MT-Bench records (one output per turn) become items with every turn's question and each run's reply."""
    from evalsuite.annotate import sources

    runs = [str(multi_turn_run(tmp_path, m)) for m in ("m1", "m2")]
    items, origin = sources.from_runs(runs, "pairwise")
    store = Store.create(tmp_path / "mt.sqlite", {"name": "mt", "mode": "pairwise", **origin}, items)
    with serving(store) as url:
        item = httpx.get(f"{url}/api/next", params={"annotator": "a"}).json()["item"]
    assert len(item["prompt"]) == 2 and "rhyme" in item["prompt"][1]
    assert all(len(a["turns"]) == 2 and "rhyme" in a["turns"][1] for a in item["answers"])


# ---------------------------------------------------------------------------- bad input: one clear line
def test_cli_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    """No runs, runs of different tasks or sample sets, a missing run, a public host without a token (refused
    before a store is made), a store of another project, a file that is not a store: each a `UsageError`."""
    a, b = make_runs(tmp_path, 4)
    other = write_run(tmp_path / "other", {"gsm8k": SynthTask({"acc": [1.0] * 4})}, model="m")
    fewer = write_run(tmp_path / "fewer", {"qa": SynthTask({"acc": [1.0] * 3})}, model="m3")
    cases = [((), "no runs given"),
             ((str(a), str(other)), "different tasks"),
             ((str(a), str(fewer)), "different samples"),
             ((str(a), str(tmp_path / "nope")), "not an evalsuite run directory"),
             (("import",), "import takes JSONL or CSV files")]
    for argv, words in cases:
        with pytest.raises(UsageError, match=words):
            cli(*argv, "--port", "0")
    store = tmp_path / "s.sqlite"
    with pytest.raises(UsageError, match="--token"):  # refused before a store is made or anything listens
        cli(str(a), str(b), "--store", str(store), "--host", "0.0.0.0")
    assert not store.exists()
    assert cli("import", str(items_file(tmp_path)), "--store", str(store)) == 0
    with pytest.raises(UsageError, match="holds another annotation project"):
        cli(str(a), str(fewer), "--shared-only", "--store", str(store))
    not_db = tmp_path / "x.sqlite"
    not_db.write_text("hello")
    with pytest.raises(UsageError, match="not an annotation store"):
        Store(not_db)


def items_file(tmp: Path) -> Path:
    path = tmp / "items.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}?", "answer": f"Answer {i}."}) + "\n"
                            for i in range(3)))
    return path


def test_busy_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A port in use: `evalsuite annotate` says so in one line and exits 2 (through the real CLI)."""
    a, b = make_runs(tmp_path, 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"port {port} on 127.0.0.1 is in use"):
            bind("127.0.0.1", port)
        code = ("import sys; from evalsuite.annotate.cli import configure, run; import argparse; "
                "from evalsuite.errors import EvalsuiteError\n"
                "p = argparse.ArgumentParser(); configure(p)\n"
                "try:\n    sys.exit(run(p.parse_args(sys.argv[1:])))\n"
                "except EvalsuiteError as e:\n    print('evalsuite: error:', e, file=sys.stderr); sys.exit(2)")
        proc = subprocess.run([sys.executable, "-c", code, str(a), str(b), "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "in use" in proc.stderr


SERVE = ("import sys, argparse; from evalsuite.annotate.cli import configure, run\n"
         "p = argparse.ArgumentParser(); configure(p); sys.exit(run(p.parse_args(sys.argv[1:])))")


def test_serve_command_resumes_the_same_store(tmp_path: Path) -> None:
    """The real `serve` path (bind, uvicorn on that socket) in a subprocess: a vote survives a restart,
    and the second start reuses the store next to the runs instead of making a new project."""
    a, b = make_runs(tmp_path, 3)

    def start() -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen([sys.executable, "-c", SERVE, str(a), str(b), "--port", "0"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        for _ in range(3):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if line.startswith("open "):
                return proc, line.split()[1].rstrip("/")
        proc.kill()
        raise AssertionError(proc.stderr.read())  # type: ignore[union-attr]

    proc, url = start()
    try:
        item = httpx.get(f"{url}/api/next", params={"annotator": "ann"}, timeout=10).json()["item"]
        assert httpx.post(f"{url}/api/submit", json={"annotator": "ann", "item": item["id"],
                                                     "verdict": {"choice": "A"}}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    stores = list(tmp_path.glob("annotate-qa-pairwise-*.sqlite"))
    assert len(stores) == 1
    proc, url = start()
    try:
        assert httpx.get(f"{url}/api/progress", params={"annotator": "ann"}, timeout=10).json()["done"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert list(tmp_path.glob("annotate-*.sqlite")) == stores


def test_export_command_writes_a_human_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`export` refuses an empty project, then writes a kind-"human" run dir with agreement between annotators."""
    store = new_store(tmp_path, n=3)
    with pytest.raises(UsageError, match="no judgments yet"):
        cli("export", "--store", str(store.path))
    for ann in ("x", "y"):
        while (item := store.next_item(ann)) is not None:
            store.submit(ann, item["id"], {"choice": "A" if item["id"] % 2 else "B"})
    assert cli("export", "--store", str(store.path), "--output-dir", str(tmp_path / "runs"), "--bootstrap", "20") == 0
    out = Path(capsys.readouterr().out.split("-> ")[-1].strip())
    log = rundir.load_run(out)
    assert log.results.kind == "human" and log.results.human.annotators == ["x", "y"]  # type: ignore[union-attr]
    assert log.results.human.agreement["pairs"]["x | y"]["n"] == 3  # type: ignore[union-attr]
    assert len(log.records) == 6
