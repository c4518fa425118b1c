"""The training loss and NEFTune: the model math the recipe owns.

Written here rather than taken from a Trainer because this is where packing bugs hide: the loss
is a plain cross-entropy over pre-shifted per-example targets (see packing.py), so a label can
never cross an example boundary, and logits are computed only where a target exists.
"""

from __future__ import annotations

import math
from typing import Any

from evalsuite.trainers import packing


def _inner(model: Any) -> Any:
    """The module under a DDP-style wrapper (which has no `.config`)."""
    return getattr(model, "module", model) if not hasattr(model, "config") else model


def distributed_wrapper(model: Any) -> bool:
    """True under DDP, FSDP (1 or 2) or DeepSpeed: their root forward syncs gradients or gathers the
    sharded parameters, so calling the decoder directly would bypass it. FSDP-wrapped models still
    have `.config` (FSDP1 forwards attributes, FSDP2 keeps the class), so the attribute cannot tell."""
    import torch

    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.nn.parallel import DistributedDataParallel

    kinds: tuple[type, ...] = (DistributedDataParallel, FullyShardedDataParallel)
    try:
        from torch.distributed.fsdp import FSDPModule  # FSDP2 (`fully_shard`)

        kinds += (FSDPModule,)
    except ImportError:  # older torch: FSDP1 only
        pass
    return isinstance(model, kinds) or type(model).__name__ == "DeepSpeedEngine" or any(
        isinstance(m, kinds) for m in model.modules())


def token_loss_sum(model: Any, tensors: dict[str, Any], device: Any) -> Any:
    """Sum of cross-entropy over target tokens; logits are computed only where a target exists.

    The vocabulary projection is the biggest activation of a small model (49k x tokens); skipping
    the prompt/padding positions saves memory and time. Models whose head does more than a linear
    layer (softcapping, logit scaling), and models under a DDP wrapper (whose forward does the
    gradient sync), take the full forward instead.
    """
    import torch.nn.functional as F

    ids, pos, tgt = (tensors[k].to(device) for k in ("input_ids", "position_ids", "targets"))
    keep = tgt != packing.IGNORE
    inner = _inner(model)
    cfg = inner.config
    special_head = any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logits_scaling", "logit_scale"))
    if special_head or inner is not model or distributed_wrapper(model):
        logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits[keep]
    else:
        hidden = model.get_decoder()(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state
        logits = model.get_output_embeddings()(hidden[keep])
    return F.cross_entropy(logits.float(), tgt[keep], reduction="sum")


def add_neftune(model: Any, alpha: float) -> Any:
    """NEFTune (Jain et al. 2023) as TRL applies it: uniform noise on input embeddings, training only.

    Returns the hook handle (`.remove()` turns it off).
    """
    import torch

    def hook(module: Any, args: Any, output: Any) -> Any:
        if not module.training:
            return output
        mag = alpha / math.sqrt(output.size(1) * output.size(2))
        return output + torch.zeros_like(output).uniform_(-mag, mag)

    return model.get_input_embeddings().register_forward_hook(hook)
