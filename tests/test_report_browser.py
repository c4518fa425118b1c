"""The HTML report in a real browser: headless Chromium loads it offline without console errors.

Console messages are read from Chromium's own log (`--enable-logging=stderr --v=0` prints every
console message and uncaught exception as `CONSOLE` lines), which needs no extra package; a page
with a deliberate error proves the check can fail. The filter JS is exercised through `--dump-dom`
with `#q=` in the URL, which the report's script reads into its search box.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evalsuite.reports.compare import compare, load_runs
from evalsuite.reports.gate import gate
from evalsuite.reports.html import render_html
from evalsuite.rundir import load_run
from tests.fixtures_runs import SynthTask, arena, binary, flip, training, write_run

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome"))
                 if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium; "
                                    ".ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions", "--no-first-run",
         "--disable-background-networking", "--enable-logging=stderr", "--v=0"]


def chromium(tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / "profile"  # a fresh profile: no state shared with other runs
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url],  # type: ignore[list-item]
                          capture_output=True, text=True, timeout=90)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three runs (one a trainer run, one with arena ratings), subtasks, and tricky text in samples."""
    tmp = tmp_path_factory.mktemp("report")
    base = binary(150, 0.55, seed=4)
    groups = ["alg</td>ebra", "bio"] * 75
    outs = ["<script>alert('x')</script> answer " + str(i) for i in range(150)]

    judge_cfg = {"judge": {"model": "judge-model", "fingerprint": "fp-judge"}}
    lc = {"metrics": {"lc_win_rate": {"value": 0.52, "stderr": 0.03, "n": 150},
                      "lc_length_coef": {"value": 0.001, "stderr": None, "n": 150}}}

    def task(values: list[float]) -> dict[str, SynthTask]:
        # the metrics tasks/winrate.py and tasks/mt_bench.py (single mode) really emit
        win = flip(base, 5, 5, 9)
        return {"qa": SynthTask({"acc": values, "len": [0.5 + 0.1 * v for v in values]}, groups=groups, outputs=outs),
                "winrate": SynthTask({"win": win, "judge_error": [0.0] * 150,
                                      "length_diff": [12.0 - 30 * w for w in win]}, config=judge_cfg, extra=lc),
                "mt_bench": SynthTask({"score": [1.0 + 9 * v for v in flip(base, 4, 4, 7)], "judge_error": [0.0] * 150},
                                      config=judge_cfg)}

    paths = [
        write_run(tmp / "base", task(base), model="base-model"),
        write_run(tmp / "sft", task(flip(base, 20, 4, 1)), model="sft-lora",
                  extra={"training": training([50, 100, 150, 200])}),
        write_run(tmp / "dpo", task(flip(base, 3, 12, 2)), model="dpo"),
    ]
    arena_run = write_run(tmp / "arena", {"arena:mt_bench": SynthTask({"position_inconsistency": [0.0, 1.0] * 10})},
                          model="arena", extra={"arena": arena({"base-model": (1000, 980, 1020),
                                                                "sft-lora": (960, 935, 985), "dpo": (1040, 1015, 1066)})})
    comp = compare(load_runs(paths), n_boot=1000)
    out = tmp / "report.html"
    out.write_text(render_html(comp, gate(comp), arena_runs=[load_run(arena_run)]), encoding="utf-8")
    return out


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html), "no network references"
    assert "<link" not in html and "@import" not in html
    assert html.count("<svg") == 4  # forest plot, loss + score charts, arena ratings
    assert "&lt;script&gt;alert(" in html and "<script>alert(" not in html  # sample text is escaped
    for text in ("sft-lora", "dpo", "95% CI", "mcnemar-exact", "best checkpoint: step", "lc_win_rate", "1040.0",
                 "alg&lt;/td&gt;ebra", "lost", "gained"):
        assert text in html, text


def test_judge_section_shows_the_real_judge_metrics(report: Path) -> None:
    """`win` and `lc_win_rate` (winrate) and MT-Bench's `score` are the judge rows; diagnostics are not."""
    html = report.read_text(encoding="utf-8")
    section = html[html.index('<section id="arena">'):]
    section = section[:section.index("</section>")]
    rows = re.findall(r"<tr[^>]*><td>([^<]*)</td><td>([^<]*)</td>", section)
    assert set(rows) == {("winrate", "win"), ("winrate", "lc_win_rate"), ("mt_bench", "score")}


@needs_chromium
def test_opens_in_chromium_without_console_errors(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    proc = chromium(tmp_path, report.as_uri(), f"--screenshot={shot}", "--window-size=1280,2400")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_lines(proc.stderr) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real, non-blank page


@needs_chromium
def test_console_errors_are_detected(tmp_path: Path) -> None:
    """The check above can fail: a page with an uncaught error is caught by the same reading."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>missingFunction();</script></body></html>")
    proc = chromium(tmp_path, bad.as_uri(), "--dump-dom")
    assert any("Uncaught ReferenceError: missingFunction" in line for line in console_lines(proc.stderr))


@needs_chromium
def test_search_filter_runs_in_the_browser(report: Path, tmp_path: Path) -> None:
    html = report.read_text(encoding="utf-8")
    total = html.count('class="changed-row"')
    assert total > 20
    dom = chromium(tmp_path, report.as_uri(), "--dump-dom").stdout
    assert f'data-shown="{total}"' in dom and f"{total} of {total} shown" in dom
    proc = chromium(tmp_path, report.as_uri() + "#q=" + "qa-1", "--dump-dom")
    shown = int(re.search(r'data-shown="(\d+)"', proc.stdout).group(1))  # type: ignore[union-attr]
    expected = len(set(re.findall(r"<code>(qa-1\d*)</code>", html)))
    assert 0 < shown < total and shown == sum(
        1 for m in re.finditer(r'<tr class="changed-row".*?</tr>', html, re.S) if "qa-1" in m.group(0))
    assert expected > 0 and console_lines(proc.stderr) == []
