"""Aggregate statistics over per-sample scores.

The standard error is the sample standard deviation over sqrt(n) (lm-eval's `mean_stderr`),
so numbers line up with the peers'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error; stderr is nan below two values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def metric(values: Sequence[float]) -> dict[str, float]:
    """The shape every metric takes in results.json."""
    mean, se = mean_stderr(values)
    return {"value": mean, "stderr": se, "n": len(values)}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod
