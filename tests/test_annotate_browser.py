"""The annotation page in real Chromium (Playwright, Debian's /usr/bin/chromium, offline).

An annotator judges 10 pairwise items by keyboard, reloads and resumes, a second annotator works at
the same time, undo takes a vote back, and the store then holds exactly what was pressed. Likert and
ranking are driven by keyboard (and ranking by drag). Model output holding <script>, onerror and
javascript: links never runs: no dialog opens, no console error appears. Screenshots of each mode
go to docs/img/ when EVALSUITE_UPDATE_SCREENSHOTS=1. Under CI=true a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evalsuite import rundir
from evalsuite.annotate import human_battles, sources
from evalsuite.annotate.export import write_export
from evalsuite.annotate.store import Store
from tests.test_annotate_api import make_runs, serving

CHROMIUM = "/usr/bin/chromium"
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
KEYS = {"1": "A", "ArrowLeft": "A", "2": "B", "ArrowRight": "B", "3": "tie", "ArrowDown": "tie", "4": "both_bad",
        "ArrowUp": "both_bad"}


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI must run the browser tests)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Watched:
    """A page that records console errors, uncaught exceptions and dialogs (alert() from model output)."""

    def __init__(self, browser: Any, url: str, ready: bool = True) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 860})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.goto(url)
        if ready:
            self.ready()

    def ready(self) -> None:
        self.page.wait_for_selector("body[data-state='ready'], body[data-state='done']")

    def item(self) -> int:
        return int(self.page.get_attribute("body", "data-item-id") or 0)

    def press(self, key: str) -> None:
        before = self.page.text_content("#progress")
        self.page.keyboard.press(key)
        self.wait(lambda: self.page.text_content("#progress") != before and self.state() in ("ready", "done"))

    def state(self) -> str:
        return str(self.page.get_attribute("body", "data-state"))

    def wait(self, condition: Any, timeout: float = 10.0) -> None:
        """Poll from Python: the page's CSP forbids the eval that Playwright's wait_for_function needs."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("the page did not reach the expected state")
            self.page.wait_for_timeout(20)

    def shot(self, name: str, tmp: Path) -> Path:
        path = tmp / name
        self.page.screenshot(path=str(path), full_page=True)
        if os.environ.get("EVALSUITE_UPDATE_SCREENSHOTS") == "1":
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOCS_IMG / name)
        return path


def _store(tmp: Path, mode: str, n: int, **extra: Any) -> Store:
    models = ("model-a", "model-b", "model-c") if mode == "ranking" else ("model-a", "model-b")
    items, origin = sources.from_runs([str(p) for p in make_runs(tmp, n, models)], mode)
    project = {"name": "qa", "mode": mode, "criteria": [], "labels": [], **origin, **extra}
    return Store.create(tmp / f"{mode}.sqlite", project, items)


def test_pairwise_by_keyboard_resume_second_annotator_undo(browser: Any, tmp_path: Path) -> None:
    """10 items by keyboard with a reload in the middle; bob votes in between; undo; export == keys pressed."""
    store = _store(tmp_path, "pairwise", 12)
    pressed: dict[str, dict[int, str]] = {"alice": {}, "bob": {}}
    with serving(store) as url:
        alice = Watched(browser, f"{url}/?annotator=alice")
        bob = Watched(browser, f"{url}/?annotator=bob")
        keys, shot = list(KEYS), False
        for n in range(10):
            if n == 5:  # the annotator reloads: the page resumes at the first item not judged
                alice.page.reload()
                alice.ready()
                assert alice.page.text_content("#progress") == "5 / 12 done"
            assert not alice.page.is_visible("#login"), "the name form is hidden when the URL names the annotator"
            if not shot and alice.page.query_selector("#item pre"):  # a screenshot with rendered code in it
                alice.shot("annotate-pairwise.png", tmp_path)
                shot = True
            item, key = alice.item(), keys[n % len(keys)]
            assert item not in pressed["alice"]
            alice.press(key)
            pressed["alice"][item] = KEYS[key]
            if n % 3 == 0:  # a second annotator at the same time
                bitem, bkey = bob.item(), keys[(n + 1) % len(keys)]
                bob.press(bkey)
                pressed["bob"][bitem] = KEYS[bkey]
        text = alice.page.inner_text("#item")
        assert "<script>alert(1)</script>" in text or "<img src=x onerror=alert(2)>" in text or "[click]" in text
        assert alice.page.text_content("#progress") == "10 / 12 done"
        if not shot:
            alice.shot("annotate-pairwise.png", tmp_path)
        last = list(pressed["alice"])[-1]
        alice.press("u")  # undo: the last item is back on screen, one fewer done
        assert alice.item() == last and alice.page.text_content("#progress") == "9 / 12 done"
        alice.press("3")
        pressed["alice"][last] = "tie"
        alice.page.click("#skip")
        alice.wait(lambda: "skipped" in alice.page.text_content("#progress"))
        assert alice.problems == [] and bob.problems == [], alice.problems + bob.problems
        alice.context.close()
        bob.context.close()
    stored: dict[str, dict[int, str]] = {"alice": {}, "bob": {}}
    for j in store.judgments():
        stored[j["annotator"]][j["item_id"]] = j["verdict"]["choice"]
    assert stored == pressed
    exported: dict[str, dict[int, str]] = {"alice": {}, "bob": {}}
    log = rundir.load_run(write_export(store, tmp_path / "runs", n_boot=20))
    ids = {it["key"]: it["id"] for it in store.items()}
    for r in log.records:
        meta = r.sample.metadata
        exported[meta["annotator"]][ids[meta["item"]]] = meta["verdict"]["choice"]
    assert exported == pressed, "the exported run dir holds exactly the keys pressed"
    assert len(human_battles(store.path)) == len(pressed["alice"]) + len(pressed["bob"])
    assert len(store.judgments(kind="skip")) == 1


def test_likert_and_ranking_by_keyboard(browser: Any, tmp_path: Path) -> None:
    """Likert: 1-5 per criterion, a label, a comment, Enter. Ranking: Shift+arrows move, drag moves, Enter."""
    store = _store(tmp_path / "l", "likert", 2, criteria=["helpfulness", "accuracy", "relevance"],
                   labels=["comply", "refuse", "partial"])
    with serving(store) as url:
        w = Watched(browser, f"{url}/?annotator=carol")
        w.page.keyboard.press("Enter")  # incomplete: a message, nothing stored
        assert "Rate helpfulness" in w.page.text_content("#message")
        for key in ("4", "2", "5", "2"):  # three criteria, then the label (2 = refuse)
            w.page.keyboard.press(key)
        w.page.fill("#comment", "clear <b>answer</b>")
        w.shot("annotate-likert.png", tmp_path)
        w.page.click("body", position={"x": 5, "y": 300})  # leave the comment box so keys act on the page
        w.press("Enter")
        assert w.problems == [], w.problems
        w.context.close()
    j = store.judgments()[0]
    assert j["verdict"] == {"scores": {"helpfulness": 4, "accuracy": 2, "relevance": 5}, "comment": "clear <b>answer</b>",
                            "label": "refuse"}
    rank = _store(tmp_path / "r", "ranking", 2)
    with serving(rank) as url:
        w = Watched(browser, f"{url}/?annotator=dave")
        slots = lambda: [li.get_attribute("data-slot") for li in w.page.query_selector_all("#ranking li")]  # noqa: E731
        assert slots() == ["A", "B", "C"]
        w.page.keyboard.press("Shift+ArrowDown")  # A moves below B
        assert slots() == ["B", "A", "C"]
        w.page.keyboard.press("Shift+ArrowDown")  # the focus moves with it: A moves below C
        assert slots() == ["B", "C", "A"]
        w.page.keyboard.press("ArrowUp")
        w.page.keyboard.press("ArrowUp")  # focus on B
        w.page.keyboard.press("Shift+ArrowDown")
        assert slots() == ["C", "B", "A"]
        w.page.drag_and_drop("#ranking li[data-slot='A']", "#ranking li[data-slot='C']")  # A dropped on the top
        assert slots() == ["A", "C", "B"]
        w.shot("annotate-ranking.png", tmp_path)
        w.press("Enter")
        assert w.problems == [], w.problems
        w.context.close()
    j = rank.judgments()[0]
    assert j["verdict"] == {"ranking": ["A", "C", "B"]}
    assert j["result"]["ranking"] == [j["shown"][0], j["shown"][2], j["shown"][1]]


def test_xstest_labels_and_multi_turn(browser: Any, tmp_path: Path) -> None:
    """Real XSTest answers (Markdown, code) imported for a refusal label: the page asks for a name, one key
    picks the label; MT-Bench-like runs show each turn's question with both answers to it."""
    import argparse

    from evalsuite.annotate.cli import configure, run
    from tests.conftest import SHARED_DATA
    from tests.test_annotate_api import multi_turn_run

    csv = SHARED_DATA / "xstest" / "model_completions" / "xstest_v2_completions_gpt4.csv"
    if not csv.is_file():
        pytest.skip("XSTest not in shared/data (set EVALSUITE_DATA_DIR)")
    parser = argparse.ArgumentParser()
    configure(parser)
    run(parser.parse_args(["import", str(csv), "--store", str(tmp_path / "x.sqlite"), "--answer-fields", "completion",
                           "--criteria", "", "--labels", "full_compliance,full_refusal,partial_refusal",
                           "--limit", "3", "--seed", "2"]))
    store = Store(tmp_path / "x.sqlite")
    with serving(store) as url:
        w = Watched(browser, f"{url}/", ready=False)  # no name in the URL: the page asks for one
        w.page.wait_for_selector("#login:not([hidden])")
        w.page.fill("#name", "erin")
        w.page.keyboard.press("Enter")
        w.ready()
        assert w.page.text_content("#who") == "erin" and not w.page.is_visible("#login")
        w.page.keyboard.press("1")
        w.shot("annotate-labels.png", tmp_path)
        w.press("Enter")
        assert w.problems == [], w.problems
        w.context.close()
    assert [j["verdict"]["label"] for j in store.judgments()] == ["full_compliance"]
    runs = [str(multi_turn_run(tmp_path, m)) for m in ("m1", "m2")]
    items, origin = sources.from_runs(runs, "pairwise")
    mt = Store.create(tmp_path / "mt.sqlite", {"name": "mt_bench", "mode": "pairwise", **origin}, items)
    with serving(mt) as url:
        w = Watched(browser, f"{url}/?annotator=erin")
        assert [t.inner_text() for t in w.page.query_selector_all(".turn-label")] == ["TURN 1", "TURN 2"]
        assert len(w.page.query_selector_all(".answer")) == 4  # two answers per turn
        w.shot("annotate-multiturn.png", tmp_path)
        w.press("2")
        assert w.problems == [], w.problems
        w.context.close()
    assert [j["verdict"]["choice"] for j in mt.judgments()] == ["B"]
