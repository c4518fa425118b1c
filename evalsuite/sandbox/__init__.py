"""evalsuite's sandbox for model-written code: run a program with limits, get a verdict.

    from evalsuite.sandbox import run_program, run_many, Job, Limits
    v = run_program("def f(): return 1", "assert f() == 1")
    v.status, v.detail, v.stdout, v.wall_s, v.peak_rss_bytes, v.layers

Everything a program does happens in a separate, isolated process tree (see `layers`); the
harness never `exec`s model code in its own interpreter. `isolation()` says which layers this
host gives; tasks record it in their config. What a program prints and the explanation of its
failure end up in samples.jsonl and the report, so both are capped (stdout/stderr tails of
`Limits.tail_bytes`, the explanation at 2,000 characters), and bwrap and unshare show a program
none of the host's files but what Python needs (see `layers`).
"""

from evalsuite.sandbox.execute import Limits, Status, Verdict, run_program
from evalsuite.sandbox.layers import Isolation, detect
from evalsuite.sandbox.pool import (
    Job,
    calibrated_limits,
    default_workers,
    host_factor,
    reference_limits,
    reference_seconds,
    run_many,
)

__all__ = ["Isolation", "Job", "Limits", "Status", "Verdict", "calibrated_limits", "default_workers",
           "host_factor", "isolation", "reference_limits", "reference_seconds", "run_many", "run_program"]


def isolation() -> Isolation:
    """The isolation mode and layers in use (detected once per process)."""
    return detect()
