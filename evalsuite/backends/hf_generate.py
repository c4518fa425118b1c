"""Generation for the HF backend, with the prompts' shared prefix computed once.

GSM8K's first 20 5-shot prompts share 687 tokens (measured) and chat prompts share their system prompt. With
`prefix_reuse` on (the default), a group of prompts with the same sampling settings finds its
longest common token prefix; its KV cache is computed once, and each batch continues from a copy of
it. The rows are laid out as `prefix + left padding + own suffix` with the padding masked, so every
token keeps the position it has in a plain left-padded batch (transformers derives positions from
the attention mask) and the outputs are the same (in float32, on 20/20 GSM8K prompts; in bf16 a near tie can flip). Batches are cut as without reuse, by the whole
prompt + max_tokens: every row still holds the whole prompt's KV, and on CPU a wider batch was
measured slower per prompt (its decoding steps copy that KV, and finished rows wait for the longest).

Progress: if the `done` callback has an `on_tokens(n)` attribute, it is called after every
decoding step with the number of tokens the batch produced in that step (rows already finished do
not count), so a long generation shows progress before its requests complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalsuite.backends import Done, identity, prefix_kv
from evalsuite.records import GenerateRequest, Output

if TYPE_CHECKING:
    from evalsuite.backends.hf import HFBackend


@dataclass
class SharedPrefix:
    """The first `length` tokens of every prompt in a group and their KV cache (batch of one)."""

    length: int
    cache: Any


def generate(backend: HFBackend, requests: Sequence[GenerateRequest], done: Done) -> None:
    """Answer generation requests grouped by sampling settings, calling `done` per request."""
    on_tokens = getattr(done, "on_tokens", None)
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
        sampled = r.temperature > 0
        stop = backend._stops(r)
        key = (r.max_tokens, stop, r.temperature, r.top_p, r.n if sampled else 1, r.seed if sampled else None)
        groups.setdefault(key, []).append(i)
    for (max_tokens, stop, temperature, top_p, n, seed), idxs in groups.items():
        texts = {i: backend.render(requests[i].prompt) for i in idxs}
        encoded = {i: backend._encode(texts[i])[-(backend.max_length - max_tokens) :] for i in idxs}
        order = sorted(idxs, key=lambda i: -len(encoded[i]))
        prefix = None
        if backend.prefix_reuse:
            length = prefix_kv.shared_length([encoded[i] for i in order], backend.min_shared_prefix)
            prefix = prefix_cache(backend, encoded[order[0]][:length]) if length else None
        # seeded sampling runs one prompt at a time so its samples do not depend on the batch
        batches = (
            [[i] for i in order]
            if temperature > 0
            else backend._batches(order, lambda i: len(encoded[i]) + max_tokens)
        )
        for batch in batches:
            if seed is not None:
                backend._torch.manual_seed(seed)
            t0 = time.perf_counter()
            outs = backend._generate_batch([encoded[i] for i in batch], max_tokens, stop, temperature, top_p, n,
                                           prefix, on_tokens)
            latency = (time.perf_counter() - t0) / len(batch)
            for i, (gen_texts, n_out) in zip(batch, outs):
                if temperature == 0 and requests[i].n > 1:
                    gen_texts = gen_texts * requests[i].n  # greedy: every sample is the same
                extra = {"prompt_text": texts[i]} if not isinstance(requests[i].prompt, str) else {}
                done(i, Output(texts=gen_texts, tokens_in=len(encoded[i]), tokens_out=n_out, latency_s=latency,
                               extra=extra))


def prefix_cache(backend: HFBackend, tokens: Sequence[int]) -> SharedPrefix:
    """One forward pass over the shared tokens; its cache is copied for every batch."""
    with backend._torch.inference_mode():
        return SharedPrefix(len(tokens), prefix_kv.compute(backend.model, tokens, backend.device))


def generate_batch(
    backend: HFBackend, prompts: list[list[int]], max_tokens: int, stop: tuple[str, ...], temperature: float,
    top_p: float, n: int, prefix: SharedPrefix | None = None, on_tokens: Callable[[int], Any] | None = None,
) -> list[tuple[list[str], int]]:
    """Generate for one batch; with `prefix`, the rows continue from a copy of its cache."""
    torch = backend._torch
    p = prefix.length if prefix else 0
    width = max(len(q) for q in prompts) - p  # the widest suffix
    pad = backend.tokenizer.pad_token_id
    rows = [q[:p] + [pad] * (width - len(q) + p) + q[p:] for q in prompts]
    masks = [[1] * p + [0] * (width - len(q) + p) + [1] * (len(q) - p) for q in prompts]
    kwargs: dict[str, Any] = {"num_return_sequences": n}
    if prefix:
        # the cache is not expanded by num_return_sequences: repeat the rows here, in its order
        rows = [r for r in rows for _ in range(n)]
        masks = [m for m in masks for _ in range(n)]
        kwargs = {"past_key_values": prefix_kv.copy_for(prefix.cache, len(rows)), "num_return_sequences": 1}
    ids = torch.tensor(rows, device=backend.device)
    mask = torch.tensor(masks, device=backend.device)
    eos = backend.model.generation_config.eos_token_id
    # a model whose generation config names no end-of-sequence id: None is not a token
    eos_ids = {t for t in set(eos if isinstance(eos, list) else [eos]) | {backend.tokenizer.eos_token_id} if t is not None}
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    prompt_width = p + width
    with torch.inference_mode():
        out = backend.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_tokens,
            stopping_criteria=stop_criteria(backend, stop, prompt_width, on_tokens, eos_ids | {pad}),
            pad_token_id=pad,
            top_k=None,
            **sampling,
            **kwargs,
        )
    results = []
    for b in range(len(prompts)):
        texts, n_tokens = [], 0
        for k in range(n):
            new = out[b * n + k, prompt_width:].tolist()
            cut = next((j for j, t in enumerate(new) if t in eos_ids or t == pad), len(new))
            text = identity.cut_at_stop(backend.tokenizer.decode(new[:cut], skip_special_tokens=True), stop)
            texts.append(text)
            n_tokens += cut
        results.append((texts, n_tokens))
    return results


def stop_criteria(backend: HFBackend, stop: tuple[str, ...], prompt_width: int,
                  on_tokens: Callable[[int], Any] | None = None, ended: set[int] | None = None) -> Any:
    """Stop a row once a stop string appears in its *generated* text; count each step's tokens.

    Written by hand because transformers' `stop_strings` also matches across the prompt
    boundary (a prompt ending in "11" stops "1" at once); like lm-eval, we decode only the
    tail of the new tokens. The counter never stops a row: it reports the rows whose newest
    token is not an end or padding token (a finished row is padded from then on).
    """
    if not stop and on_tokens is None:
        return None
    from transformers import StoppingCriteria, StoppingCriteriaList

    torch, tok = backend._torch, backend.tokenizer
    criteria: list[Any] = []
    if stop:
        lookback = max(len(tok(s, add_special_tokens=False)["input_ids"]) for s in stop) + 2

        class StopOnStrings(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                tails = tok.batch_decode(input_ids[:, prompt_width:][:, -lookback:])
                return torch.tensor([any(s in t for s in stop) for t in tails], device=input_ids.device)

        criteria.append(StopOnStrings())
    if on_tokens is not None:
        ended_ids = torch.tensor(sorted(t for t in (ended or ()) if t is not None), device=backend.device)

        class CountTokens(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                on_tokens(int((~torch.isin(input_ids[:, -1], ended_ids)).sum().item()))
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        criteria.append(CountTokens())
    return StoppingCriteriaList(criteria)
