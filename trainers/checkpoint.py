"""Checkpoints that a killed run resumes from exactly: weights, optimizer, scheduler, step, RNG.

A checkpoint folder `<run>/checkpoints/step-N/` holds the adapter (or the full model) as
`save_pretrained` writes it — so `evalsuite run --model <run>/checkpoints/step-N` scores it directly —
plus `trainer_state.pt` and `training_data.json` (the manifest of the run's training-data
fingerprints, `evalsuite.provenance`: the scorer warns when a task's samples were trained on). It
is written under a temporary name and renamed, so a kill mid-save leaves no half checkpoint behind.
The data order needs no state: the stream is a pure function of the seed, and resuming replays it
to the saved micro-batch count.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

from evalsuite import provenance
from evalsuite.errors import UsageError

STATE = "trainer_state.pt"  # step, scheduler, RNG, counters: small, kept in every checkpoint
OPTIMIZER = "optimizer.pt"  # the optimizer state (as large as two copies of the trainable weights): resume needs the newest


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first (partial ones, without their state file, are ignored)."""
    root = run_dir / "checkpoints"
    found = []
    for d in root.glob("step-*") if root.is_dir() else []:
        if d.is_dir() and (d / STATE).is_file() and d.name.removeprefix("step-").isdigit():
            found.append((int(d.name.removeprefix("step-")), d))
    return sorted(found)


def save(run_dir: Path, step: int, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any,
         extra: dict[str, Any], base_spec: str | None, state_dict: dict[str, Any] | None = None) -> Path:
    import torch

    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
    _point_adapter_at(tmp, base_spec)
    tokenizer.save_pretrained(tmp)  # carries the chat template used in training
    if step:  # a small manifest pointing at the run's training-data fingerprints (step 0 trained on nothing)
        provenance.link(run_dir, tmp)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
    state = {
        "step": step,
        "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        **extra,
    }
    torch.save(state, tmp / STATE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _point_adapter_at(folder: Path, base_spec: str | None) -> None:
    """Adapters name their base by the user's spec (e.g. `smollm2-135m`), not a cache path."""
    cfg_path = folder / "adapter_config.json"
    if base_spec and cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = base_spec
        cfg_path.write_text(json.dumps(cfg, indent=2))


def load_state(ckpt: Path, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG from a checkpoint; returns the saved state dict."""
    import torch

    state = torch.load(ckpt / STATE, weights_only=False)  # our own file, written by save()
    if (ckpt / OPTIMIZER).is_file():
        optimizer.load_state_dict(torch.load(ckpt / OPTIMIZER, weights_only=False))
    elif "optimizer" in state:  # checkpoints written before the optimizer got its own file
        optimizer.load_state_dict(state["optimizer"])
    else:
        raise UsageError(f"{ckpt} keeps no optimizer state (only the newest checkpoint does, unless "
                         "training.keep_optimizer: all): resume from the newest checkpoint")
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    if state["rng"].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state


def load_weights(model: Any, ckpt: Path, full: bool) -> None:
    """Put a checkpoint's trainable weights into the live model."""
    from safetensors.torch import load_file

    if full:
        files = sorted(ckpt.glob("model*.safetensors"))
        weights: dict[str, Any] = {}
        for f in files:
            weights.update(load_file(f))
        missing, _ = model.load_state_dict(weights, strict=False)
        if [k for k in missing if "lm_head" not in k]:
            raise UsageError(f"checkpoint {ckpt} does not match the model (missing {missing[:3]})")
        return
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, load_file(ckpt / "adapter_model.safetensors"))


def drop_old_optimizer_states(run_dir: Path, keep: str) -> None:
    """`keep_optimizer: last`: only the newest checkpoint keeps its optimizer state (resume reads only that)."""
    if keep == "all":
        return
    for _, path in list_checkpoints(run_dir)[:-1]:
        (path / OPTIMIZER).unlink(missing_ok=True)


def prune(run_dir: Path, keep_last: int | None, protect: set[int]) -> None:
    """Drop old checkpoints beyond `keep_last`, never the best or the newest."""
    if not keep_last:
        return
    ckpts = list_checkpoints(run_dir)
    for step, path in ckpts[:-keep_last]:
        if step not in protect:
            shutil.rmtree(path, ignore_errors=True)
