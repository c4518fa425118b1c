"""Device and precision choice, and the checks that need no model (run before any load).

`training.device: auto` trains on CUDA when torch sees a GPU, else on the CPU; `precision: auto`
is bf16 autocast (fp32 master weights, what accelerate's `mixed_precision="bf16"` does) on GPUs
that support it and fp32 elsewhere. Under `accelerate launch` each process gets its own GPU from
accelerate; `device` only says whether a GPU is used at all.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
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
    if t.method == "qlora":
        missing = [] if cuda else ["a CUDA GPU"]
        if importlib.util.find_spec("bitsandbytes") is None:
            missing.append("bitsandbytes (pip install 'evalsuite[qlora]')")
        if missing:
            raise UsageError(f"qlora needs {' and '.join(missing)} for its 4-bit base; without them use "
                             "training.method: lora")
    if t.precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UsageError("this GPU does not support bf16: set training.precision: fp32")
    bf16 = t.precision == "bf16" or (t.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    return Placement(cuda=cuda, bf16=bf16)


def preflight(cfg: Any) -> Placement:
    """Checks that need no model: fail before a run directory or a model load."""
    from evalsuite.progress import console

    from evalsuite.trainers.config import best_metric_problem

    where = placement(cfg)
    if (problem := best_metric_problem(cfg)) is not None:  # again: --export may have been added on the command line
        raise UsageError(problem)
    if cfg.export.gguf:
        check_gguf_architecture(cfg.model)
    check_local_data(cfg)
    if where.bf16 and not where.cuda:
        console.print("[yellow]bf16 autocast on CPU: usually slower than fp32 here[/yellow]")
    return where


def check_local_data(cfg: Any) -> None:
    """Read every local training file once now: a missing or malformed one fails before a model loads
    and before a run directory exists (hub datasets are left to the loader: they need the network)."""
    from evalsuite.trainers.data import load_dataset_spec

    for spec in cfg.data.datasets:
        if spec.path and not spec.hub:
            load_dataset_spec(spec)


def check_gguf_architecture(model: str) -> None:
    """GGUF export is written for llama-architecture models: say so before training, not after."""
    from evalsuite.backends import models as model_store
    from evalsuite.trainers.gguf_export import SUPPORTED_ARCH, unsupported_arch_message

    resolved = model_store.resolve(model)
    local = Path(resolved.path) / "config.json"
    if local.is_file():
        arch = json.loads(local.read_text()).get("model_type")
    else:  # a hub id: its config.json only (a missing network is left to the model load to report)
        try:
            from transformers import AutoConfig

            arch = AutoConfig.from_pretrained(resolved.path).model_type
        except (OSError, ValueError):
            return
    if arch != SUPPORTED_ARCH:
        raise UsageError(unsupported_arch_message(arch, model))
