"""Run many programs in parallel, and calibrate time limits to the host and to the reference solutions.

Each program is its own sandboxed process tree, so a thread per worker that launches and
supervises one subprocess at a time is all the parallelism needed (the GIL is released while
waiting). Each worker owns a slot, and so (as root) a uid of its own: RLIMIT_NPROC then counts
only that worker's processes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from evalsuite.sandbox.execute import DEFAULT_LIMITS, Limits, Verdict, run_program

_REFERENCE_LOOP_S = 0.05  # the calibration loop's time on a 2024 x86 core; slower hosts get longer limits
REFERENCE_FACTOR = 4.0  # like evalplus: a solution may take 4x its reference solution's time
_MEASURE_LIMITS = replace(DEFAULT_LIMITS, timeout_s=30.0)  # for timing the reference solutions once
_CACHE_FILE = "sandbox_reference_times.json"


@dataclass(frozen=True)
class Job:
    """One program to run: the code, its tests, and optional per-job limits."""

    program: str
    test: str = ""
    entry_point: str | None = None
    keep: tuple[str, ...] = ()
    stdin: str = ""
    limits: Limits | None = None


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def run_many(jobs: Sequence[Job], workers: int | None = None, limits: Limits = DEFAULT_LIMITS,
             on_done: Callable[[int, Verdict], None] | None = None) -> list[Verdict]:
    """Run every job, `workers` at a time; `on_done(index, verdict)` is called as each finishes."""
    workers = max(1, min(workers or default_workers(), len(jobs) or 1, 256))
    slots: queue.Queue[int] = queue.Queue()
    for s in range(workers):
        slots.put(s)

    def one(i: int) -> Verdict:
        job, slot = jobs[i], slots.get()
        try:
            v = run_program(job.program, job.test, entry_point=job.entry_point, keep=job.keep,
                            limits=job.limits or limits, stdin=job.stdin, slot=slot)
        finally:
            slots.put(slot)
        if on_done:
            on_done(i, v)
        return v

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(one, range(len(jobs))))


@functools.lru_cache(maxsize=1)
def host_factor() -> float:
    """How much slower than the reference core this host runs a fixed pure-Python loop (>= 1)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        acc = 0
        for i in range(400_000):
            acc += i * i % 7
        best = min(best, time.perf_counter() - t0)
    return max(1.0, round(best / _REFERENCE_LOOP_S, 2))


def calibrated_limits(floor_s: float = 3.0, workers: int | None = None, base: Limits = DEFAULT_LIMITS) -> Limits:
    """`base` with timeout = floor x host slowness x oversubscription (workers per core), never below floor."""
    cores = default_workers()
    over = max(1.0, (workers or cores) / cores)
    return replace(base, timeout_s=round(max(floor_s, floor_s * host_factor() * over), 2))


def reference_seconds(jobs: Sequence[Job], workers: int | None = None) -> list[float | None]:
    """Each reference program's run time in reference-core seconds (measured / `host_factor()`).

    Measured once, then cached in `<cache dir>/sandbox_reference_times.json` by a hash of the program
    and its tests (a changed data file gives new keys). None where the reference did not pass.
    """
    from evalsuite.cache import default_cache_dir
    from evalsuite.rundir import atomic_write_text

    path = default_cache_dir() / _CACHE_FILE
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    keys = [_job_key(j) for j in jobs]
    todo = [i for i, k in enumerate(keys) if k not in cache]
    if todo:
        factor = host_factor()
        for i, v in zip(todo, run_many([jobs[i] for i in todo], workers, _MEASURE_LIMITS)):
            cache[keys[i]] = round(v.wall_s / factor, 5) if v.passed else None
        try:
            atomic_write_text(path, json.dumps(cache))
        except OSError:
            pass  # an unwritable cache dir only costs measuring again next time
    return [cache[k] for k in keys]


def reference_limits(limits: Limits, reference_s: float | None, factor: float = REFERENCE_FACTOR) -> Limits:
    """`limits` with timeout = max(its timeout, factor x reference time x host factor)."""
    if reference_s is None:
        return limits
    timeout = round(factor * reference_s * host_factor(), 2)
    return replace(limits, timeout_s=timeout) if timeout > limits.timeout_s else limits


def _job_key(job: Job) -> str:
    text = json.dumps([job.program, job.test, job.entry_point, list(job.keep), job.stdin])
    return hashlib.sha256(text.encode()).hexdigest()[:24]
