"""torch's CPU thread count for the HF backend: one rule, recorded in the run (`info()[\"cpu_threads\"]`)."""

from __future__ import annotations

from typing import Any


def apply(torch: Any, num_threads: int | str | None) -> str:
    """torch's CPU threads: a number, or `auto` = one thread when the machine is already busy.

    On a shared machine (load average at or above the core count) torch's OpenMP workers spin against
    the other jobs: benchmarks/bench_cpu_threads.py measured greedy generation at 0.47 tokens/s with
    torch's default 2 threads and 3.08 with one thread, on 2 cores at load average 12. A machine whose
    load is below its core count keeps torch's default."""
    import os

    if isinstance(num_threads, int) and not isinstance(num_threads, bool):
        torch.set_num_threads(num_threads)
        return f"{num_threads} (num_threads)"
    if num_threads == "auto" and hasattr(os, "getloadavg"):
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        if load >= cores:
            torch.set_num_threads(1)
            return f"1 (auto: load average {load:.1f} >= {cores} cores)"
    return f"{torch.get_num_threads()} (torch default)"
