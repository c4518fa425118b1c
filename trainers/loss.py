"""The training loss and NEFTune: the model math the recipe owns.

Written here rather than taken from a Trainer because this is where packing bugs hide: the loss
is a plain cross-entropy over pre-shifted per-example targets (see packing.py), so a label can
never cross an example boundary, and logits are computed only where a target exists.
"""

from __future__ import annotations

import functools
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
    """Sum of cross-entropy over target tokens; logits exist only where a target does, a chunk at a time.

    The vocabulary projection is the biggest activation of a small model (49k x tokens). Unwrapped
    models with a plain linear head take `chunked_cross_entropy` on the target positions' hidden
    states: the full fp32 logits never exist and nothing vocabulary-sized is kept for backward.
    Models under a distributed wrapper go through its root forward (it syncs gradients or gathers
    sharded parameters), and so do heads that do more than a linear layer (softcapping, logit
    scaling): flattened to one packed row so that `logits_to_keep` selects exactly the target
    positions. A head that is not a plain `nn.Linear` (LoRA on the head) projects the targets at once.
    """
    import torch
    import torch.nn.functional as F

    ids, pos, tgt = (tensors[k].to(device) for k in ("input_ids", "position_ids", "targets"))
    keep = tgt != packing.IGNORE
    inner = _inner(model)
    cfg = inner.config
    special_head = any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logits_scaling", "logit_scale"))
    if special_head or inner is not model or distributed_wrapper(model):
        # the root forward, on one row: position ids already restart per example, so attention is unchanged
        # (block-diagonal), and `logits_to_keep` then names exactly the target positions
        where = keep.reshape(-1).nonzero().squeeze(1)
        out = model(input_ids=ids.reshape(1, -1), position_ids=pos.reshape(1, -1), use_cache=False,
                    logits_to_keep=where)
        return F.cross_entropy(out.logits[0].float(), tgt.reshape(-1)[where], reduction="sum")
    hidden = model.get_decoder()(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state[keep]
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:  # e.g. a LoRA'd or saved-module head: its own forward
        return F.cross_entropy(head(hidden).float(), tgt[keep], reduction="sum")
    return chunked_cross_entropy(hidden, head.weight, head.bias, tgt[keep])


def chunked_cross_entropy(hidden: Any, weight: Any, bias: Any, targets: Any, chunk_elems: int = 1 << 23) -> Any:
    """`F.cross_entropy(hidden @ weight.T + bias, targets, reduction="sum")` in fp32, a token chunk at a time.

    Same math and precision as the plain head (the projection in the autocast dtype, the softmax in
    fp32), but each chunk's logits are freed at once: the gradient with respect to the hidden
    states (and the head, when it trains) is computed in the same pass, so backward keeps only
    tensors of the hidden size. `chunk_elems` bounds the logits alive at once (default 8M: 32 MB).
    """
    import torch

    dev = hidden.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else hidden.dtype
    grads = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad
                                         or (bias is not None and bias.requires_grad))
    rows = max(1, chunk_elems // weight.size(0))
    return _chunked_ce_class().apply(hidden, weight, bias, targets, dtype, rows, grads)


@functools.cache
def _chunked_ce_class() -> Any:
    """The autograd function, built on first use (importing this module does not import torch)."""
    import torch

    class ChunkedCE(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, targets: Any, dtype: Any, rows: int,
                    grads: bool) -> Any:
            need_h, need_w = grads and ctx.needs_input_grad[0], grads and ctx.needs_input_grad[1]
            need_b = grads and bias is not None and ctx.needs_input_grad[2]
            with torch.autocast(hidden.device.type, enabled=False):
                w = weight.to(dtype)
                b = bias.to(dtype) if bias is not None else None
                total = torch.zeros((), dtype=torch.float32, device=hidden.device)
                g_h = torch.empty_like(hidden) if need_h else None
                g_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
                g_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
                for s in range(0, hidden.size(0), rows):
                    h, t = hidden[s:s + rows].to(dtype), targets[s:s + rows]
                    logits = (h @ w.T if b is None else torch.addmm(b, h, w.T)).float()
                    lse = torch.logsumexp(logits, dim=-1)
                    total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                    if need_h or need_w or need_b:
                        g = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                        g[torch.arange(len(t), device=g.device), t] -= 1.0  # d(loss)/d(logits)
                        if need_b:
                            g_b += g.sum(0)
                        g = g.to(dtype)
                        if need_h:
                            g_h[s:s + rows] = g @ w
                        if need_w:
                            g_w.addmm_(g.T.float(), h.float())
            ctx.save_for_backward(g_h, g_w, g_b)
            ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
            return total

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            g_h, g_w, g_b = ctx.saved_tensors
            w_dtype, b_dtype = ctx.dtypes
            # in place: these buffers exist only for this backward, so the graph supports one backward pass
            # (the trainer's); `retain_graph=True` and a second backward would scale them twice
            return (None if g_h is None else g_h.mul_(grad.to(g_h.dtype)),
                    None if g_w is None else g_w.mul_(grad).to(w_dtype),
                    None if g_b is None else g_b.mul_(grad).to(b_dtype), None, None, None, None)

    return ChunkedCE


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
