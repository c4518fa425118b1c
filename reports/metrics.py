"""Which metrics are diagnostics that a gate leaves alone.

Directions are not decided here: every task declares them (`Task.higher_is_better`) and results.json
records `higher_is_better` for every metric, which compare and gate read.
"""

from __future__ import annotations

# Not gated unless a rule names them: length diagnostics describe outputs (neither good nor bad), and
# the length-controlled win rate is a fitted aggregate with no per-sample values, so no paired test
# can tell a drop from noise (the per-sample `win` is gated).
DIAGNOSTIC_PHRASES = ("length_diff", "length_coef", "lc_win_rate")


def is_diagnostic(metric: str) -> bool:
    """True for metrics a gate should not judge unless a rule names them."""
    low = metric.lower()
    return any(p in low for p in DIAGNOSTIC_PHRASES)
