"""Under `CI=true`, a test suite that skipped is a failed suite.

A skip says "something this test needs is not here". On a developer's laptop that is fine; in CI
it would let the run go green while the real tests never ran. So, when the `CI` environment
variable is true (most CI services set it; .ci/run does):

- `unavailable(what)` (the fixtures' way to say a prerequisite is missing) fails instead of skipping;
- every skip, except the few listed in `EXPECTED_CI_SKIPS`, turns the exit status non-zero, and the
  summary prints one `CI: ...` line per distinct reason, so the log says what is missing.

tests/conftest.py registers it; `pytest -p tests.ci_strict` loads it on its own.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import NoReturn

import pytest

PREFIX = "CI: "
# Skips a correctly set up CI machine still takes: conditions of the network, not missing tools.
EXPECTED_CI_SKIPS = ("the hub is reachable",)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(what: str) -> NoReturn:
    """Skip the test because `what` is missing; under CI fail it (CI must not pass without it)."""
    if in_ci():
        pytest.fail(f"{PREFIX}missing {what}", pytrace=False)
    pytest.skip(what)


class StrictSkips:
    """Collects skips and `unavailable` failures; makes skips fail the session; prints one line each."""

    def __init__(self) -> None:
        self.skips: dict[str, list[str]] = defaultdict(list)
        self.missing: dict[str, list[str]] = defaultdict(list)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = _skip_reason(report)
            if not any(ok in reason for ok in EXPECTED_CI_SKIPS):
                self.skips[reason].append(report.nodeid)
        elif report.failed and report.longreprtext.lstrip().startswith(("Failed: " + PREFIX, PREFIX)):
            line = report.longreprtext.strip().splitlines()[0].removeprefix("Failed: ")
            self.missing[line].append(report.nodeid)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.skips and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:  # noqa: ANN001 - pytest's TerminalReporter
        for line, nodes in self.missing.items():
            terminalreporter.write_line(f"{line} ({_count(nodes)} failed for it, e.g. {nodes[0]})", red=True, bold=True)
        for reason, nodes in self.skips.items():
            terminalreporter.write_line(f"{PREFIX}{_count(nodes)} skipped, which CI does not allow: {reason} "
                                        f"(e.g. {nodes[0]})", red=True, bold=True)


def pytest_configure(config: pytest.Config) -> None:
    if in_ci() and not config.pluginmanager.has_plugin("ci-strict-skips"):
        config.pluginmanager.register(StrictSkips(), "ci-strict-skips")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _count(nodes: list[str]) -> str:
    return f"{len(nodes)} test{'s' if len(nodes) != 1 else ''}"
