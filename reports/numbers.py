"""How every report writes a number and a p-value (one rule for HTML, Markdown and the terminal)."""

from __future__ import annotations

import math


def fmt_number(v: float | None, digits: int = 4) -> str:
    """`v` with `digits` decimals; "–" for a missing or non-finite value."""
    return f"{v:.{digits}f}" if v is not None and math.isfinite(v) else "–"


def fmt_pvalue(v: float | None) -> str:
    """Three significant digits, scientific below 1e-4; "–" when there is no test."""
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.3g}" if v >= 1e-4 else f"{v:.1e}"
