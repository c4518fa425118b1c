"""Arena ratings: evalsuite's Bradley-Terry fit vs Chatbot Arena's scikit-learn recipe.

Chatbot Arena (FastChat `elo_analysis.compute_mle_elo`) fits BT as a logistic regression with
scikit-learn (one row per battle, ties entered as one win plus one loss, no penalty) and gets CIs
by refitting on bootstrap resamples. evalsuite aggregates battles per pair and fits with a damped
Newton step (`evalsuite.judges.arena`). Both run here on the same synthetic battles drawn from known
strengths: the script prints the fit and bootstrap times, their ratio, and the largest rating
difference between the two (they estimate the same model, so it should be a few Elo points at most:
evalsuite adds a weak L2 penalty to keep all-win models finite).

    python benchmarks/bench_arena_ratings.py [--battles 20000] [--models 8] [--boot 100]
"""

from __future__ import annotations

import argparse
import math
import random
import time

import numpy as np
from evalsuite.judges import arena

from _device import add_device_flag, note_cpu_only


def simulate(n: int, n_models: int, seed: int) -> tuple[list[arena.Battle], dict[str, float]]:
    rng = random.Random(seed)
    strengths = {f"m{i}": 60.0 * i for i in range(n_models)}
    names = sorted(strengths)
    battles = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        p = 1 / (1 + 10 ** ((strengths[b] - strengths[a]) / 400))
        u = rng.random()
        battles.append((a, b, 0.5 if u < 0.1 else float(u < 0.1 + 0.9 * p)))
    return battles, strengths


def sklearn_mle(battles: list[arena.Battle], models: list[str]) -> np.ndarray:
    """FastChat's recipe: X row +ln(10) for model_a, -ln(10) for model_b, a tie entered as a win plus a loss.

    Those two rows get weight 1/2 each here, so a tie weighs what one battle weighs, as in
    evalsuite's soft label (FastChat's full weight counts a tie twice, pulling ratings together).
    """
    from sklearn.linear_model import LogisticRegression

    index = {m: i for i, m in enumerate(models)}
    rows, ys, ws = [], [], []
    for a, b, s in battles:
        outcomes = [1.0] if s == 1.0 else [0.0] if s == 0.0 else [1.0, 0.0]
        for y in outcomes:
            rows.append((index[a], index[b]))
            ys.append(y)
            ws.append(1.0 / len(outcomes))
    X = np.zeros((len(rows), len(models)))
    idx = np.arange(len(rows))
    pairs = np.array(rows)
    X[idx, pairs[:, 0]] = math.log(10)
    X[idx, pairs[:, 1]] = -math.log(10)
    lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-6, max_iter=1000)  # C=inf: no penalty
    lr.fit(X, np.array(ys), sample_weight=np.array(ws))
    ratings = 400 * lr.coef_[0]
    return ratings - ratings.mean() + arena.INIT


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--battles", type=int, default=20000)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--boot", type=int, default=100)
    add_device_flag(ap, runs_model=False)
    args = ap.parse_args()
    note_cpu_only(args.device)
    battles, _ = simulate(args.battles, args.models, 0)
    models = sorted({m for a, b, _ in battles for m in (a, b)})
    arena.bradley_terry(battles[:10], n_boot=0)  # imports out of the timing

    t0 = time.perf_counter()
    ours = arena.bradley_terry(battles, n_boot=0)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = sklearn_mle(battles, models)
    t_theirs = time.perf_counter() - t0
    diff = max(abs(ours[m]["rating"] - theirs[i]) for i, m in enumerate(models))

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    arena.bradley_terry(battles, n_boot=args.boot)
    tb_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.boot):
        sklearn_mle([battles[i] for i in rng.integers(0, len(battles), len(battles))], models)
    tb_theirs = time.perf_counter() - t0

    print(f"{args.battles} battles, {args.models} models, {args.boot} bootstrap rounds")
    print(f"single fit    evalsuite {t_ours * 1000:8.1f} ms   sklearn {t_theirs * 1000:8.1f} ms   ratio {t_theirs / t_ours:6.1f}x")
    print(f"fit+bootstrap evalsuite {tb_ours:8.2f} s    sklearn {tb_theirs:8.2f} s    ratio {tb_theirs / tb_ours:6.1f}x")
    print(f"largest rating difference between the two fits: {diff:.2f} Elo points")


if __name__ == "__main__":
    main()
