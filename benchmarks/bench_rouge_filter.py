"""ROUGE-L novelty filtering (Self-Instruct's >= 0.7 rule) of N instructions against a growing pool.

evalsuite's `RougeIndex` (bag-overlap upper bound + rapidfuzz LCS) vs the naive loop Self-Instruct
runs: rouge-score's `_score_lcs` of the new instruction against every pool instruction
(pre-tokenised, as Self-Instruct does). The naive loop is O(N * pool): it runs on the first
`--naive-n` candidates, where both are timed and their decisions compared one by one; its time on
all N is NOT measured but extrapolated from its measured time per pair times the exact number of
pairs it would score. The output labels every figure "measured" or "extrapolated".
A second naive variant stops at the first match (cheaper on rejections), measured on the subset.

Data: the 175 human seed tasks start the pool; N "generated" instructions are made from the 427
human instructions (seed + user-oriented) by word edits of a pool entry (near-copies, mostly
rejected) and by splicing two instructions with substitutions (mostly novel), the mix a
Self-Instruct run sees. Usage: python benchmarks/bench_rouge_filter.py [--n 20000] [--naive-n 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from evalsuite.datagen.rouge import RougeIndex, naive_first_at_least, tokenize

from _device import add_device_flag, note_cpu_only

DATA = Path(os.environ.get("EVALSUITE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def human_instructions() -> tuple[list[str], list[str]]:
    folder = DATA / "self_instruct"
    seeds = [json.loads(line)["instruction"] for line in (folder / "seed_tasks.jsonl").open()]
    user = [json.loads(line)["instruction"] for line in (folder / "user_oriented_instructions.jsonl").open()]
    return seeds, seeds + user


def synthesize(n: int, human: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    vocab = sorted({w for h in human for w in h.split()})
    made: list[str] = []
    for _ in range(n):
        if rng.random() < 0.35:  # near-copy of something seen (human or generated)
            words = rng.choice(made if made and rng.random() < 0.5 else human).split()
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(words))
                op = rng.random()
                if op < 0.4:
                    words[i] = rng.choice(vocab)
                elif op < 0.7:
                    words.insert(i, rng.choice(vocab))
                elif len(words) > 3:
                    del words[i]
        else:  # a new task spliced from two, with substitutions
            a, b = rng.choice(human).split(), rng.choice(human).split()
            words = a[: rng.randint(2, max(2, len(a) // 2 + 1))] + b[rng.randint(0, len(b) // 2):]
            for _ in range(rng.randint(0, 3)):
                words[rng.randrange(len(words))] = rng.choice(vocab)
        made.append(" ".join(words))
    return made


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--naive-n", type=int, default=1000)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verify-all", action="store_true", help="also check all N decisions by exhaustive LCS")
    add_device_flag(ap, runs_model=False)
    args = ap.parse_args()
    note_cpu_only(args.device)
    if not 1 <= args.naive_n <= args.n:
        ap.error("--naive-n must be between 1 and --n")
    seeds, human = human_instructions()
    cands = synthesize(args.n, human, args.seed)

    index = RougeIndex(seeds)
    fast_keep, pool_sizes = [], []
    t0 = time.perf_counter()
    t_subset = None
    for i, c in enumerate(cands):
        if i == args.naive_n:
            t_subset = time.perf_counter() - t0
        pool_sizes.append(len(index))
        fast_keep.append(index.add_if_novel(c, args.threshold) is None)
    t_fast = time.perf_counter() - t0
    t_subset = t_fast if t_subset is None else t_subset
    pairs_total = sum(pool_sizes)

    from rouge_score.rouge_scorer import _score_lcs

    sub = cands[: args.naive_n]
    pool = [tokenize(s) for s in seeds]
    naive_keep, pairs_sub = [], 0
    t0 = time.perf_counter()
    for c in sub:  # Self-Instruct's loop: score against every pool entry, keep if max < threshold
        toks = tokenize(c)
        best = max((_score_lcs(toks, p).fmeasure for p in pool), default=0.0)
        pairs_sub += len(pool)
        naive_keep.append(best < args.threshold)
        if naive_keep[-1]:
            pool.append(toks)
    t_naive = time.perf_counter() - t0

    pool = [tokenize(s) for s in seeds]
    early_keep = []
    t0 = time.perf_counter()
    for c in sub:  # the same with an early exit at the first match
        early_keep.append(naive_first_at_least(pool, c, args.threshold) is None)
        if early_keep[-1]:
            pool.append(tokenize(c))
    t_early = time.perf_counter() - t0

    per_pair = t_naive / pairs_sub
    naive_est = per_pair * pairs_total
    same = naive_keep == fast_keep[: args.naive_n] == early_keep
    print(f"ROUGE-L >= {args.threshold} novelty filter, pool starts at {len(seeds)} seed tasks; "
          f"cpu_count={os.cpu_count()} (machine shared with other jobs: absolute times are noisy)")
    print(f"candidates: {args.n}, kept {sum(fast_keep)} ({100 * sum(fast_keep) / args.n:.1f}%), final pool {len(index)}, "
          f"pool pairs {pairs_total:,}, exact LCS computed by evalsuite {index.lcs_calls:,} "
          f"({100 * index.lcs_calls / pairs_total:.3f}% of pairs)")
    print(f"MEASURED on the subset (first {args.naive_n} of {args.n} candidates), both sides timed; "
          f"decisions identical (evalsuite == naive all-pairs == naive early-exit): {same}")
    print(f"  evalsuite          {t_subset:8.2f} s (measured)")
    print(f"  naive all-pairs    {t_naive:8.2f} s (measured; {pairs_sub:,} pairs, {1e6 * per_pair:.1f} us/pair)  "
          f"-> evalsuite {t_naive / t_subset:.0f}x faster (measured vs measured)")
    print(f"  naive early-exit   {t_early:8.2f} s (measured)  -> evalsuite {t_early / t_subset:.0f}x faster (measured vs measured)")
    if args.naive_n < args.n:
        print(f"ALL {args.n} candidates: evalsuite measured; the naive loop was NOT run on them (extrapolated)")
        print(f"  evalsuite          {t_fast:8.2f} s (measured)")
        print(f"  naive all-pairs  ~{naive_est:8.0f} s (EXTRAPOLATED: {pairs_total:,} pairs x the subset's measured "
              f"us/pair) -> evalsuite ~{naive_est / t_fast:.0f}x faster (measured vs extrapolated)")
    if args.verify_all:
        t0 = time.perf_counter()
        full_same = brute_force_keep(seeds, cands, args.threshold) == fast_keep
        print(f"  all {args.n} decisions checked against an exhaustive LCS over every pair "
              f"(rapidfuzz, no prefilter; measured {time.perf_counter() - t0:.0f} s): identical: {full_same}")
        same = same and full_same
    elif args.naive_n < args.n:
        print(f"  decisions beyond the first {args.naive_n} were not compared (pass --verify-all to check all {args.n})")
    if not same:
        raise SystemExit("decisions differ: this is a bug")


def brute_force_keep(seeds: list[str], cands: list[str], threshold: float) -> list[bool]:
    """Every pair's exact LCS (C++ scan of the whole pool), no bound: checks the prefilter loses nothing."""
    from rapidfuzz import process
    from rapidfuzz.distance import Indel
    from rouge_score import scoring

    vocab: dict[str, int] = {}

    def enc(text: str) -> str:
        return "".join(chr(0x4E00 + vocab.setdefault(t, len(vocab))) for t in tokenize(text))

    pool = [enc(s) for s in seeds]
    keep = []
    for c in cands:
        q = enc(c)
        hits = process.extract(q, pool, scorer=Indel.normalized_similarity, score_cutoff=threshold - 1e-6, limit=None) if q else []
        # exact rouge-score float for the near-threshold ones: F = fmeasure(L/|pred|, L/|target|)
        novel = not any(scoring.fmeasure(lcs / len(pool[j]), lcs / len(q)) >= threshold
                        for _, _, j in hits if (lcs := (len(q) + len(pool[j]) - Indel.distance(q, pool[j])) // 2))
        keep.append(novel)
        if novel:
            pool.append(q)
    return keep


if __name__ == "__main__":
    main()
