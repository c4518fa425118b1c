"""Device and precision choice, and the checks that need no model (run before any load).

`training.device: auto` trains on CUDA when torch sees a GPU, else on the CPU; `precision: auto`
is bf16 autocast (fp32 master weights, what accelerate's `mixed_precision="bf16"` does) on GPUs
that support it and fp32 elsewhere. Under `accelerate launch` each process gets its own GPU from
accelerate; `device` only says whether a GPU is used at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evalsuite.errors import UsageError


@dataclass(frozen=True)
class Placement:
    cuda: bool  # train on CUDA (else CPU)
    bf16: bool  # bf16 autocast

    @property
    def label(self) -> str:
        return f"{'cuda' if self.cuda else 'cpu'} / {'bf16' if self.bf16 else 'fp32'}"


def placement(cfg: Any) -> Placement:
    """Where and in what precision a config trains, on this machine (UsageError when it cannot)."""
    import torch

    t = cfg.training
    has_cuda = torch.cuda.is_available()
    if t.device == "cuda" and not has_cuda:
        raise UsageError("training.device is cuda but torch sees no CUDA GPU (use device: auto or cpu)")
    cuda = has_cuda and t.device != "cpu"
    if t.method == "qlora" and not cuda:
        raise UsageError("qlora needs a CUDA GPU (bitsandbytes 4-bit); on CPU use training.method: lora")
    if t.precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UsageError("this GPU does not support bf16: set training.precision: fp32")
    bf16 = t.precision == "bf16" or (t.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    return Placement(cuda=cuda, bf16=bf16)


def preflight(cfg: Any) -> Placement:
    """Checks that need no model: fail before a run directory or a model load."""
    from evalsuite.progress import console

    where = placement(cfg)
    if where.bf16 and not where.cuda:
        console.print("[yellow]bf16 autocast on CPU: usually slower than fp32 here[/yellow]")
    return where
