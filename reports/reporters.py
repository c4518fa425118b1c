"""The built-in reporters: each writes one file of a comparison (and the gate's result) and returns its path.

They are what the `evalsuite.reporters` entry points name, and `write_reports` is how compare, gate and
report pick them: `--report FORMAT:PATH` looks FORMAT up by name, exactly as for a third party's reporter
(`evalsuite.protocols.Reporter`). `--html/--markdown/--junit PATH` are spellings of the same thing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError


def _write(out: Path, text: str) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the report {out}: {exc.strerror}") from exc
    return out


def html(comparison: Any, out: Path, gate_result: Any | None = None, **options: Any) -> Path:
    """Self-contained HTML report (inline CSS/JS/SVG, opens offline): verdict, scores, every sample."""
    from evalsuite.reports.html import render_html

    return _write(out, render_html(comparison, gate_result, **options))


def markdown(comparison: Any, out: Path, gate_result: Any | None = None, **options: Any) -> Path:
    """Markdown comparison table and gate summary (PR comments, CI job summaries)."""
    from evalsuite.reports.markdown import render_markdown

    return _write(out, render_markdown(comparison, gate_result))


def junit(comparison: Any, out: Path, gate_result: Any | None = None, **options: Any) -> Path:
    """JUnit XML of a gate result, valid against the Jenkins xunit schema: one test case per check."""
    from evalsuite.reports.junit import render_junit

    if gate_result is None:
        raise UsageError("the junit reporter writes a gate's checks: use it with `evalsuite gate --report junit:PATH`")
    return _write(out, render_junit(gate_result, summary=options.get("summary", "")))


WHAT = {"html": "HTML report", "markdown": "Markdown summary", "junit": "JUnit XML"}


def parse_specs(specs: Sequence[str]) -> list[tuple[str, Path]]:
    """`FORMAT:PATH` pairs; every format checked against the registry before any work starts."""
    from evalsuite import registry

    pairs = []
    for spec in specs:
        fmt, sep, path = spec.partition(":")
        if not sep or not fmt or not path:
            raise UsageError(f"--report {spec!r}: expected FORMAT:PATH, e.g. html:report.html "
                             f"(formats: {', '.join(registry.names('reporters'))})")
        registry.get("reporters", fmt)  # an unknown format is a usage error naming the close ones
        pairs.append((fmt, Path(path)))
    return pairs


def write_reports(pairs: Sequence[tuple[str, Path]], comparison: Any, gate_result: Any | None = None,
                  **options: Any) -> None:
    """Each requested report, by the registered reporter of its format."""
    from evalsuite import registry

    for fmt, path in pairs:
        reporter = registry.get("reporters", fmt)
        written = reporter(comparison, path, gate_result, **options.get(fmt, {}))
        print(f"wrote {WHAT.get(fmt, fmt + ' report')}: {written}", file=sys.stderr)
