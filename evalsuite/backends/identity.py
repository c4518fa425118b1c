"""What a cached answer depends on, in one place: a backend's cache identity and the text rules
every backend applies to requests and answers.

The runner keys the call cache by `records.request_key(request, backend.fingerprint)`, so the
fingerprint must change whenever the numbers could: the engine (transformers, vLLM and a remote
server compute differently even on the same weights: bf16 kernels, prefix caching, batching), the
weights and adapter, dtype, quantization, chat template, BOS rule, context length and any engine
option that changes numerics. Every backend builds its fingerprint with `fingerprint()` and applies
the rules below, so a rule changed here changes every backend and every key at once; copies of
these rules were how stale answers got served.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Bump when a rule below (or a backend's output semantics) changes what a backend returns for
# the same request: every cached answer made under the old rules then misses.
RULES_VERSION = "2"

ENGINES = {
    "hf": "transformers, weights loaded by HFBackend from the model spec",
    "hf-live": "transformers, the trainer's in-memory model (its training dtype and quantization)",
    "vllm": "vLLM's offline engine",
    "openai": "a remote OpenAI-compatible server",
}


def fingerprint(
    *,
    engine: str,
    weights: str,
    dtype: str | None = None,
    quantization: Any = None,
    chat_template: str | None = None,
    add_bos_token: bool | None = None,
    max_length: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> str:
    """The model part of every cache key: equal only when two backends compute the same numbers.

    `weights` identifies the exact weights (a content hash of the folder and adapter from
    `models.weights_hash`, or a server's model identity); `options` holds engine settings that
    change numbers. Batch size and device count stay out, so the cache survives re-batching.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine '{engine}' (known: {', '.join(ENGINES)})")
    recipe = {
        "engine": engine,
        "weights": weights,
        "dtype": dtype,
        "quantization": quantization,
        "chat_template": chat_template,
        "add_bos_token": add_bos_token,
        "max_length": max_length,
        "options": dict(sorted((options or {}).items())),
        "rules": RULES_VERSION,
    }
    blob = json.dumps(recipe, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_add_bos(model_type: str) -> bool:
    """lm-eval's BOS default: Gemma needs it (it degenerates without), most others do not get one."""
    return model_type.startswith("gemma")


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """Text before the first stop sequence (engines stop *after* emitting it, or not at all)."""
    cut = min((pos for s in stop if (pos := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def shift_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval's split: trailing context whitespace belongs to the continuation."""
    n = len(context) - len(context.rstrip())
    return (context[:-n], context[-n:] + continuation) if n else (context, continuation)
