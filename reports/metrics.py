"""Which way a metric is better, and which metrics are diagnostics that a gate leaves alone.

A direction declared in results.json wins (a task entry's `higher_is_better` map, or lm-eval's,
which the bridge records under `lm_eval.higher_is_better`); otherwise the metric's name decides.
Names are split into words, so `judge_error` and `turn_1.first_position_bias` are
lower-is-better while `unbiased_acc` or `answer_rate` are not caught by a substring by accident.
"""

from __future__ import annotations

import re
from typing import Any

# Words (or word stems) of metric names whose smaller values are better.
LOWER_WORDS = frozenset({"wer", "cer", "ppl", "bpb"})
LOWER_STEMS = ("loss", "perplexity", "latency", "error", "inconsisten", "bias")
LOWER_PHRASES = ("bits_per_byte",)
# Not gated unless a rule names them: length diagnostics describe outputs (neither good nor bad), and
# the length-controlled win rate is a fitted aggregate with no per-sample values, so no paired test
# can tell a drop from noise (the per-sample `win` is gated).
DIAGNOSTIC_PHRASES = ("length_diff", "length_coef", "lc_win_rate")


def _words(metric: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", metric.lower()) if w]


def is_diagnostic(metric: str) -> bool:
    """True for metrics a gate should not judge unless a rule names them."""
    low = metric.lower()
    return any(p in low for p in DIAGNOSTIC_PHRASES)


def name_higher_is_better(metric: str) -> bool:
    """The direction guessed from the name: lower-is-better words, else higher is better."""
    low = metric.lower()
    if any(p in low for p in LOWER_PHRASES):
        return False
    return not any(w in LOWER_WORDS or w.startswith(LOWER_STEMS) for w in _words(metric))


def declared_direction(entry: dict[str, Any], metric: str) -> bool | None:
    """A direction results.json states for `metric` of this task entry, or None."""
    if not isinstance(entry, dict):
        return None
    stored = (entry.get("metrics") or {}).get(metric)
    if isinstance(stored, dict) and isinstance(stored.get("higher_is_better"), bool):
        return stored["higher_is_better"]
    base = metric.partition(",")[0]  # lm-eval keys are "acc,none"; its map is by metric name
    for source in (entry.get("higher_is_better"), (entry.get("lm_eval") or {}).get("higher_is_better")):
        if isinstance(source, dict):
            for key in (metric, base):
                if isinstance(source.get(key), bool):
                    return source[key]
    return None


def higher_is_better(metric: str, entry: dict[str, Any] | None = None) -> bool:
    """Declared in the task's results entry if it is, else guessed from the name."""
    declared = declared_direction(entry or {}, metric)
    return name_higher_is_better(metric) if declared is None else declared
