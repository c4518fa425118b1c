"""Export a checkpoint: merge the adapter into its base and save a standalone model.

`merge_and_unload` (peft) folds LoRA into the base weights; the result is saved as safetensors with
the tokenizer and the training chat template, so `evalsuite run --model <export>/merged` (or any
transformers user) gets the fine-tuned model without peft. The checkpoint's training-data fingerprints
are copied in, so scoring the export still warns about tasks it was trained on. GGUF: see `gguf_export.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evalsuite import provenance
from evalsuite.errors import UsageError


def merge(ckpt: Path, out: Path) -> Path:
    """<out>/merged: base + adapter merged, fp32 safetensors, tokenizer with chat template."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalsuite.backends import models as model_store

    target = out / "merged"
    if (ckpt / "adapter_config.json").is_file():
        base_spec = json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = model_store.resolve(base_spec)
        model: Any = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, str(ckpt)).merge_and_unload()
    elif (ckpt / "config.json").is_file():  # full fine-tuning: already standalone
        model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32)
    else:
        raise UsageError(f"{ckpt} is neither a PEFT adapter nor a model folder")
    tokenizer = AutoTokenizer.from_pretrained(str(ckpt))  # saved by the trainer, template included
    template = ckpt.parent.parent / "chat_template.jinja"  # <run>/checkpoints/step-N -> <run>
    if template.is_file():
        tokenizer.chat_template = template.read_text()
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    provenance.link(ckpt, target, copy=True)  # the export carries its training-data fingerprints along
    return target


def export(ckpt: Path, out: Path, gguf: list[str] | None = None) -> dict[str, Path]:
    """Merged folder, plus GGUF files of the requested types; returns what was written."""
    written = {"merged": merge(ckpt, out)}
    for kind in gguf or []:
        from evalsuite.trainers.gguf_export import write_gguf

        written[kind] = write_gguf(written["merged"], out / f"model-{kind}.gguf", kind)
    return written
