"""The `--device` flag every benchmark takes: `cpu` (the default) or `cuda`.

    python benchmarks/bench_X.py --device cuda

Benchmarks that run a model put it (and every tensor they build) on that device; the ones that run
no model accept the flag too, so one command line works for all, and say that they measure the CPU.
"""

from __future__ import annotations

import argparse

DEVICES = ("cpu", "cuda")


def add_device_flag(ap: argparse.ArgumentParser, runs_model: bool = True) -> None:
    help_text = ("where the model runs (cuda: the first GPU torch sees)" if runs_model else
                 "accepted for a uniform command line; this benchmark runs no model and measures the CPU either way")
    ap.add_argument("--device", choices=DEVICES, default="cpu", help=help_text)


def check_device(device: str) -> str:
    """`device`, or a one-line exit when CUDA is asked for and torch sees no GPU."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA GPU (a CPU build of torch, or no driver); "
                             "install a CUDA build of torch or pass --device cpu")
    return device


def note_cpu_only(device: str) -> None:
    if device != "cpu":
        print(f"--device {device}: this benchmark runs no model; it measures the CPU", flush=True)


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def device_label(device: str) -> str:
    """What the numbers were measured on: the GPU's name, or `cpu`."""
    if device == "cuda":
        import torch

        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"
