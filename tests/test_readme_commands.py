"""The README (and the docs' install page) give exactly the commands CI runs, and the README stays short.

`.ci/run` marks each command it shares with the README by a `# --- README: ...` line above it; a
command edited in one place and not the other would leave users with an install CI never tried.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ci_commands() -> dict[str, str]:
    """`.ci/run`'s README-marked commands, without CI's own failure handling (`|| { ... }`)."""
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    out = {}
    for i, line in enumerate(lines):
        if line.startswith("# --- README: "):
            label = line.removeprefix("# --- README: ").split(" ")[0]
            out[label] = lines[i + 1].split(" || {")[0].strip()
    return out


def test_ci_run_has_the_install_tools_docs_and_test_lines() -> None:
    assert set(ci_commands()) == {"install", "system", "docs", "test"}, ci_commands()


def test_readme_and_install_page_show_the_ci_commands_verbatim() -> None:
    """Catches a README install or test line that drifted from what CI runs."""
    readme = (REPO / "README.md").read_text().splitlines()
    install_page = (REPO / "docs" / "install.md").read_text().splitlines()
    for label, command in ci_commands().items():
        assert command in readme, f"README.md lacks .ci/run's {label} command: {command}"
        if label != "docs":
            assert command in install_page, f"docs/install.md lacks .ci/run's {label} command: {command}"


def test_readme_is_a_five_minute_read() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) < 250
