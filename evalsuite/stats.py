"""Statistics for scores and for comparing two runs sample by sample.

The standard error is the sample standard deviation over sqrt(n) (lm-eval's `mean_stderr`),
so numbers line up with the peers'. Confidence intervals: Wilson for 0/1 scores (it stays inside
[0, 1] and behaves near 0 and 1, where the normal interval does not), a percentile bootstrap for other
scores in [0, 1], a cluster bootstrap for means over clustered sub-items, normal for unbounded scores.
Two runs on the same samples are compared *paired*, which removes the between-sample variance
that dwarfs the difference between two models: McNemar's exact test for 0/1 scores, a seeded
paired bootstrap for everything else. numpy/scipy are imported inside the functions, so this
module stays cheap to import from the task API.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975), kept literal to avoid importing scipy here


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


# ---------------------------------------------------------------------------- confidence intervals
def is_binary(values: Sequence[float]) -> bool:
    """True when every value is 0 or 1 (accuracy-like scores)."""
    return len(values) > 0 and all(v == 0.0 or v == 1.0 for v in values)


def _z(confidence: float) -> float:
    if confidence == 0.95:
        return Z95
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def wilson_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (Wilson 1927); (nan, nan) for n == 0."""
    if n == 0:
        return math.nan, math.nan
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 and n successes the bound is exactly 0 / 1; floating point would give 1 - 1e-16.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def normal_ci(mean: float, stderr: float, confidence: float = 0.95) -> tuple[float, float]:
    """mean ± z·stderr; (nan, nan) when the stderr is unknown."""
    if stderr is None or not math.isfinite(stderr):
        return math.nan, math.nan
    half = _z(confidence) * stderr
    return mean - half, mean + half


@dataclass(frozen=True)
class Estimate:
    """A score with its confidence interval and how the interval was made."""

    value: float
    lo: float
    hi: float
    n: int
    method: str  # "wilson" | "normal"


def score_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Mean of per-sample scores with a 95% CI that stays in the metric's range.

    Wilson for 0/1 scores; a seeded percentile bootstrap for other scores in [0, 1] (partial credit:
    the normal interval would cross 0 or 1 near the ends); normal otherwise (unbounded scores)."""
    n = len(values)
    mean, se = mean_stderr(values)
    if is_binary(values):
        lo, hi = wilson_ci(int(round(sum(values))), n, confidence)
        return Estimate(mean, lo, hi, n, "wilson")
    if n >= 2 and all(0.0 <= v <= 1.0 for v in values):
        import numpy as np

        means = _bootstrap_means(np.asarray(values, dtype=float), 2000, np.random.default_rng(0))
        lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
        return Estimate(mean, float(lo), float(hi), n, "bootstrap")
    lo, hi = normal_ci(mean, se, confidence)
    return Estimate(mean, lo, hi, n, "normal")


def ratio_ci(num: Sequence[float], den: Sequence[float], n_boot: int = 2000, seed: int = 0,
             confidence: float = 0.95) -> Estimate:
    """sum(num) / sum(den) with a cluster bootstrap CI: whole clusters (e.g. prompts) are resampled.

    For a mean over sub-items that come in clusters (IFEval's instructions within prompts, MT-Bench's
    turns within questions, k samples per problem), items of one cluster are not independent: treating
    them as n independent items makes the interval too narrow."""
    import numpy as np

    x, w = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    total = float(w.sum())
    value = float(x.sum()) / total if total else math.nan
    if len(x) < 2 or not total:
        return Estimate(value, math.nan, math.nan, len(x), "cluster-bootstrap")
    ratios = _cluster_ratios(x, w, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(ratios, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Estimate(value, float(lo), float(hi), len(x), "cluster-bootstrap")


def _cluster_ratios(x: Any, w: Any, n_boot: int, rng: Any) -> Any:
    import numpy as np

    n = len(x)
    out = []
    chunk = max(1, 4_000_000 // n)
    for i in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - i), n), dtype=np.int32)
        den = w[idx].sum(axis=1)
        out.append(np.where(den > 0, x[idx].sum(axis=1) / np.where(den > 0, den, 1), np.nan))
    return np.concatenate(out)


# ---------------------------------------------------------------------------- paired tests
@dataclass(frozen=True)
class PairedTest:
    """B minus A on the same samples: the delta, its CI, and the two-sided p-value of 'no difference'."""

    delta: float
    lo: float
    hi: float
    pvalue: float
    n: int
    method: str  # "mcnemar-exact" | "paired-bootstrap" | "identical"
    a_only: int = 0  # 0/1 scores: samples right in A and wrong in B
    b_only: int = 0  # ... wrong in A and right in B
    details: tuple[tuple[str, Any], ...] = ()


def mcnemar_exact(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedTest:
    """McNemar's exact test on paired 0/1 scores.

    Only discordant pairs carry information: under 'no difference' the samples A got right and B
    got wrong are Binomial(discordant, 1/2). The CI of the delta is the Wald interval for paired
    proportions (var = (b + c - (b - c)^2 / n) / n^2), which is cheap and adequate at eval sizes.
    """
    from scipy.stats import binomtest

    n = len(a)
    _check_pairs(a, b)
    a_only = sum(1 for x, y in zip(a, b) if x == 1.0 and y == 0.0)
    b_only = sum(1 for x, y in zip(a, b) if x == 0.0 and y == 1.0)
    discordant = a_only + b_only
    delta = (b_only - a_only) / n if n else math.nan
    pvalue = 1.0 if discordant == 0 else float(binomtest(b_only, discordant, 0.5).pvalue)
    se = math.sqrt(max(discordant - (b_only - a_only) ** 2 / n, 0.0)) / n if n else math.nan
    lo, hi = normal_ci(delta, se, confidence)
    return PairedTest(delta, lo, hi, pvalue, n, "mcnemar-exact", a_only, b_only)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> PairedTest:
    """Paired bootstrap of mean(b - a) (Efron & Tibshirani 1993; Koehn 2004 for MT).

    Resamples sample indices with replacement (the same index for A and B, so pairs stay
    together). CI: percentile interval. p-value: two-sided, from the bootstrap distribution
    shifted to mean zero (the null), with the +1 correction so it is never exactly 0:
    p = (1 + #{|d* - d| >= |d|}) / (n_boot + 1). Vectorised in chunks to bound memory.
    """
    import numpy as np

    _check_pairs(a, b)
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(d)
    if n == 0:
        return PairedTest(math.nan, math.nan, math.nan, math.nan, 0, "paired-bootstrap")
    observed = float(d.mean())
    if np.all(d == d[0]):  # no variance: the bootstrap is degenerate
        return PairedTest(observed, observed, observed, 1.0 if observed == 0 else 0.0, n, "identical")
    means = _bootstrap_means(d, n_boot, np.random.default_rng(seed))
    alpha = 1 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    extreme = int(np.count_nonzero(np.abs(means - observed) >= abs(observed) - 1e-12))
    pvalue = (1 + extreme) / (n_boot + 1)
    return PairedTest(observed, float(lo), float(hi), min(1.0, pvalue), n, "paired-bootstrap",
                      details=(("n_boot", n_boot), ("seed", seed)))


def _bootstrap_means(d: Any, n_boot: int, rng: Any) -> Any:
    """Means of `n_boot` resamples (with replacement) of `d`.

    When `d` takes few distinct values (0/1 flips, judge grades, partial credit), the counts of each
    value in a resample are Multinomial(n, frequencies): drawing those counts is the same
    distribution as drawing indices, at O(distinct values) instead of O(n) per resample.
    """
    import numpy as np

    n = len(d)
    values, counts = np.unique(d, return_counts=True)
    if len(values) * 8 <= n:
        return rng.multinomial(n, counts / n, size=n_boot) @ values / n
    chunk = max(1, 4_000_000 // n)  # ~16 MB of int32 indices at a time
    return np.concatenate([d[rng.integers(0, n, size=(min(chunk, n_boot - i), n), dtype=np.int32)].mean(axis=1)
                           for i in range(0, n_boot, chunk)])


def paired_cluster_test(num_a: Sequence[float], den_a: Sequence[float], num_b: Sequence[float],
                        den_b: Sequence[float], n_boot: int = 10_000, seed: int = 0,
                        confidence: float = 0.95) -> PairedTest:
    """Paired cluster bootstrap of ratio_B - ratio_A (ratio = sum(num) / sum(den)) on the same clusters.

    The same cluster indices are drawn for A and B, so pairs stay together and the within-cluster
    correlation of sub-items is kept. p-value as in `paired_bootstrap` (null-shifted, +1 corrected)."""
    import numpy as np

    xa, wa, xb, wb = (np.asarray(v, dtype=float) for v in (num_a, den_a, num_b, den_b))
    if not (len(xa) == len(wa) == len(xb) == len(wb)):
        raise ValueError("paired cluster test needs equal lengths")
    n = len(xa)
    if n == 0 or not wa.sum() or not wb.sum():
        return PairedTest(math.nan, math.nan, math.nan, math.nan, n, "paired-cluster-bootstrap")
    observed = float(xb.sum() / wb.sum() - xa.sum() / wa.sum())
    if np.array_equal(xa, xb) and np.array_equal(wa, wb):
        return PairedTest(0.0, 0.0, 0.0, 1.0, n, "identical")
    rng = np.random.default_rng(seed)
    deltas = []
    chunk = max(1, 4_000_000 // n)
    for i in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - i), n), dtype=np.int32)
        da, db = wa[idx].sum(axis=1), wb[idx].sum(axis=1)
        ok = (da > 0) & (db > 0)
        deltas.append((xb[idx].sum(axis=1)[ok] / db[ok]) - (xa[idx].sum(axis=1)[ok] / da[ok]))
    d = np.concatenate(deltas)
    lo, hi = np.quantile(d, [(1 - confidence) / 2, (1 + confidence) / 2])
    extreme = int(np.count_nonzero(np.abs(d - observed) >= abs(observed) - 1e-12))
    return PairedTest(observed, float(lo), float(hi), min(1.0, (1 + extreme) / (len(d) + 1)), n,
                      "paired-cluster-bootstrap", details=(("n_boot", n_boot), ("seed", seed)))


def paired_test(a: Sequence[float], b: Sequence[float], n_boot: int = 10_000, seed: int = 0,
                confidence: float = 0.95) -> PairedTest:
    """The right paired test for the scores: McNemar exact for 0/1, paired bootstrap otherwise."""
    if is_binary(a) and is_binary(b):
        return mcnemar_exact(a, b, confidence)
    return paired_bootstrap(a, b, n_boot=n_boot, seed=seed, confidence=confidence)


def _check_pairs(a: Sequence[float], b: Sequence[float]) -> None:
    if len(a) != len(b):
        raise ValueError(f"paired test needs equal lengths, got {len(a)} and {len(b)}")
