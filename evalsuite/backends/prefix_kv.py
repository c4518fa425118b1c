"""The one place the HF backend finds a shared token prefix, runs it once, and copies its KV per batch.

Log-likelihood (hf.py: a cluster of requests with one context) and generation (hf_generate.py: a
group of prompts with the same sampling settings) both use it, so the two cannot drift apart.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any


def common_length(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """How many leading tokens `a` and `b` share, at most `limit`."""
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_length(prompts: Sequence[Sequence[int]], minimum: int) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one token of its own.

    0 when that is under `minimum` (or for a single prompt): a short prefix is not worth a copy."""
    if len(prompts) < 2:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = common_length(first, p, n)
    return n if n >= minimum else 0


def compute(model: Any, tokens: Sequence[int], device: Any) -> Any:
    """One forward pass over the shared tokens (batch of one); the caller holds torch's inference mode."""
    import torch

    return model(input_ids=torch.tensor([list(tokens)], device=device), use_cache=True).past_key_values


def copy_for(cache: Any, rows: int) -> Any:
    """A private copy of the prefix cache for a batch of `rows` (the model writes into the one it is given)."""
    kv = copy.deepcopy(cache)
    kv.batch_repeat_interleave(rows)
    return kv
