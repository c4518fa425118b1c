"""Model calls through the call cache: the backend a `--model` spec names, the cached client judges and
generators use, and `serve`, which answers a batch of requests from the cache and sends only the misses."""

from __future__ import annotations

import inspect
from typing import Any

from evalsuite import registry
from evalsuite.backends import Backend, check_backend_options
from evalsuite.cache import CallCache
from evalsuite.errors import UsageError
from evalsuite.progress import TokenMeter, console, make_progress
from evalsuite.records import Output, Request, request_key


def make_backend(model: str, backend: str | None, model_args: dict[str, Any]) -> Backend:
    """`--model vllm:PATH` / `openai:NAME` pick the backend by prefix; plain names use `--backend` (hf)."""
    prefix, sep, rest = model.partition(":")
    if sep and prefix in registry.names("backends") and not backend:
        backend, model = prefix, rest
    cls = registry.get("backends", backend or "hf")
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(model_args) - set(params))
        if unknown:
            valid = ", ".join(p for p in params if p != "model")
            raise UsageError(f"unknown --model-args {unknown} for backend '{backend or 'hf'}'; valid keys: {valid}")
    check_backend_options(cls, model, model_args)  # bad values fail here, before any weights load
    with console.status(f"loading model {model} ..."):
        return cls(model=model, **model_args)


class ModelClient:
    """A model reached through the cache, built on first use: what judges and generators call.

    `generate(requests)` returns one Output per request; cached calls never reach the model, so
    re-scoring a run re-asks the judge nothing it has answered before.
    """

    def __init__(self, model: str, model_args: dict[str, Any], cache: CallCache) -> None:
        self.spec, self.model_args, self.cache = model, model_args, cache
        self._backend: Any = None

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self._backend = make_backend(self.spec, None, self.model_args)
        return self._backend

    @property
    def name(self) -> str:
        return self.backend.model_name

    @property
    def fingerprint(self) -> str:
        return self.backend.fingerprint

    def generate(self, requests: list[Request], label: str = "judge") -> list[Output]:
        with make_progress() as progress:
            return serve(requests, self.backend, self.cache, self.fingerprint, progress, label)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


def serve(requests: list[Request], backend: Any, cache: CallCache, fingerprint: str, progress: Any, label: str) -> list[Output]:
    """Answer requests from the cache, sending only the misses (deduplicated) to the backend."""
    keys = [request_key(r, fingerprint) for r in requests]
    found = cache.get_many(list(dict.fromkeys(keys)))
    for out in found.values():
        out.extra["cached"] = True  # recorded in samples.jsonl: this answer was not recomputed
    misses: dict[str, Request] = {k: r for k, r in zip(keys, requests) if k not in found}
    unique = len(found) + len(misses)
    # cached work shows as cached ("20/20 (20 cached)"), not as a bar of the misses alone ("1/1")
    shown = f"{label} ({len(found)} cached)" if found else label
    bar = progress.add_task(shown, total=unique or None, completed=len(found), tokens=0)
    tokens = [0]
    for kind in ("loglikelihood", "generate"):
        batch_keys = [k for k, r in misses.items() if r.kind == kind]
        if not batch_keys:
            continue

        def done(i: int, out: Output, batch_keys: list[str] = batch_keys) -> None:
            found[batch_keys[i]] = out
            cache.put(batch_keys[i], out)
            tokens[0] += out.tokens_in + out.tokens_out
            progress.update(bar, advance=1, tokens=tokens[0])

        batch = [misses[k] for k in batch_keys]
        # generations also get a token bar, fed mid-batch by backends that call `done.on_tokens(n)`
        getattr(backend, kind)(batch, TokenMeter(progress, label, batch).wrap(done) if kind == "generate" else done)
    cache.flush()
    progress.update(bar, total=max(1, unique), completed=max(1, unique))
    lost = [k for k in misses if k not in found]
    for k in lost:  # a backend that silently skipped a request: record it, never drop it
        found[k] = Output(error="backend returned no output for this request")
    return [found[k] for k in keys]
