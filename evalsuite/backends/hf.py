"""Hugging Face transformers backend (CPU or CUDA).

Two things make it faster than a plain batched forward, and both are exact:
- requests whose inputs are identical (MMLU's four single-token choices share one context) are
  computed once, with every continuation read from the same logits;
- requests whose inputs share a long token prefix (the 5-shot exemplars of a subject) form a
  cluster: the prefix's KV cache is computed once and each batch of suffixes continues from a
  copy of it. Only the suffix tokens (and only the logits that are read) are computed per row.
Log-likelihood semantics are lm-eval's (`_encode_pair`), so the numbers match it. Generation
(`hf_generate`) computes the shared prompt prefix once too (`prefix_reuse`, on by default).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from evalsuite.backends import Done, check_bool, check_choice, check_int, identity
from evalsuite.backends import cpu_threads, hf_generate, prefix_kv
from evalsuite.backends import models as model_store
from evalsuite.backends.tokens import LocalTokenization
from evalsuite.chat_template import CHATML_TEMPLATE
from evalsuite.errors import BackendError, UsageError
from evalsuite.records import GenerateRequest, LoglikelihoodRequest, Output

Row = tuple[tuple[int, ...], list[tuple[int, list[int]]]]  # input tokens, [(request index, continuation)]


DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")


class HFBackend(LocalTokenization):
    """Hugging Face transformers on CPU/GPU: local folder, GGUF file, hub id or PEFT adapter."""

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int | str = "auto",
        max_batch_tokens: int | None = None,
        max_length: int | None = None,
        add_bos_token: bool | None = None,
        prefix_sharing: bool = True,
        min_shared_prefix: int = 32,
        prefix_reuse: bool = True,
        chat_template: str | None = None,
        trust_remote_code: bool = False,
        num_threads: int | str | None = "auto",
    ) -> None:
        self.check_options(model, dtype=dtype, device=device, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                           max_length=max_length, add_bos_token=add_bos_token, prefix_sharing=prefix_sharing,
                           min_shared_prefix=min_shared_prefix, prefix_reuse=prefix_reuse, chat_template=chat_template,
                           trust_remote_code=trust_remote_code, num_threads=num_threads)
        import torch

        self.threads_note = cpu_threads.apply(torch, num_threads)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        resolved = model_store.resolve(model)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
            loaded = AutoModelForCausalLM.from_pretrained(
                resolved.path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
            )
        except OSError as exc:
            hint = "" if resolved.local else " (a hub id needs network access; pass a local folder or .gguf file)"
            raise BackendError(f"cannot load model '{model}': {str(exc).splitlines()[0]}{hint}") from exc
        if resolved.adapter:
            from peft import PeftModel

            loaded = PeftModel.from_pretrained(loaded, resolved.adapter)
        loaded.to(device).eval()
        self._setup(loaded, tokenizer, resolved, "hf", chat_template, add_bos_token, batch_size, max_batch_tokens,
                    max_length, prefix_sharing, min_shared_prefix, prefix_reuse)

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, resolved: model_store.ResolvedModel, *, engine: str = "hf-live",
                    chat_template: str | None = None, add_bos_token: bool | None = None, batch_size: int | str = "auto",
                    max_batch_tokens: int | None = None, max_length: int | None = None, prefix_sharing: bool = True,
                    min_shared_prefix: int = 32, prefix_reuse: bool = True) -> HFBackend:
        """The HF backend around a model already in memory (the trainer's), used as it is.

        Its dtype and device are the model's. `engine` is part of the cache identity: the default
        `hf-live` keeps its answers apart from HFBackend loading `resolved` from disk, because the
        in-memory model need not compute what that load computes (training dtype, QLoRA's 4-bit
        base, weights not yet saved). `resolved` names the weights for the fingerprint.
        """
        cls._check_serving_options(batch_size=batch_size, max_batch_tokens=max_batch_tokens, max_length=max_length,
                                   add_bos_token=add_bos_token, prefix_sharing=prefix_sharing,
                                   min_shared_prefix=min_shared_prefix, prefix_reuse=prefix_reuse)
        self = cls.__new__(cls)
        self._setup(model, tokenizer, resolved, engine, chat_template, add_bos_token, batch_size, max_batch_tokens,
                    max_length, prefix_sharing, min_shared_prefix, prefix_reuse)
        return self

    def _setup(self, model: Any, tokenizer: Any, resolved: model_store.ResolvedModel, engine: str,
               chat_template: str | None, add_bos_token: bool | None, batch_size: int | str,
               max_batch_tokens: int | None, max_length: int | None, prefix_sharing: bool, min_shared_prefix: int,
               prefix_reuse: bool = True) -> None:
        """Every field the backend serves with, for a model loaded here or handed in."""
        import torch

        self._torch = torch
        self.model, self.tokenizer, self._resolved, self.engine = model, tokenizer, resolved, engine
        param = next(model.parameters())
        self.device = str(param.device)
        self.dtype = str(param.dtype).removeprefix("torch.")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if chat_template or not tokenizer.chat_template:
            tokenizer.chat_template = chat_template or CHATML_TEMPLATE
        model_type = getattr(model.config, "model_type", "")
        self.add_bos_token = add_bos_token if add_bos_token is not None else identity.default_add_bos(model_type)
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
        self.batch_size = None if batch_size == "auto" else int(batch_size)
        self.max_batch_tokens = max_batch_tokens or (16384 if self.device.startswith("cuda") else 2048)
        self.prefix_sharing = prefix_sharing
        self.min_shared_prefix = min_shared_prefix
        self.prefix_reuse = prefix_reuse  # generation: the shared prompt prefix's KV is computed once
        self.model_name = resolved.name
        quantization = getattr(model.config, "quantization_config", None)
        self.fingerprint = identity.fingerprint(
            engine=engine, weights=model_store.weights_hash(resolved.path, resolved.adapter), dtype=self.dtype,
            quantization=quantization.to_dict() if hasattr(quantization, "to_dict") else quantization,
            chat_template=tokenizer.chat_template, add_bos_token=self.add_bos_token, max_length=self.max_length,
            options={"device": self.device.split(":")[0]},  # CPU and CUDA kernels give different numbers
        )

    # ---------------------------------------------------------------- options
    @classmethod
    def check_options(cls, model: str, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False,
                      chat_template: str | None = None, num_threads: Any = "auto", **serving: Any) -> None:
        """Reject bad `--model-args` before anything loads (a typo must not cost a model load)."""
        check_int("num_threads", num_threads, auto=True)
        check_choice("dtype", dtype, DTYPES)
        check_bool("trust_remote_code", trust_remote_code, allow_none=False)
        if chat_template is not None and not isinstance(chat_template, str):
            raise UsageError(f"--model-args chat_template={chat_template!r}: expected a Jinja template string")
        check_device(device)
        cls._check_serving_options(**serving)
        model_store.check_spec(model)

    @staticmethod
    def _check_serving_options(batch_size: Any = "auto", max_batch_tokens: Any = None, max_length: Any = None,
                               add_bos_token: Any = None, prefix_sharing: Any = True, min_shared_prefix: Any = 32,
                               prefix_reuse: Any = True, **unknown: Any) -> None:
        if unknown:
            raise UsageError(f"unknown --model-args {sorted(unknown)} for backend 'hf'")
        check_int("batch_size", batch_size, allow_none=False, auto=True)
        check_int("max_batch_tokens", max_batch_tokens)
        check_int("max_length", max_length, minimum=2)
        check_int("min_shared_prefix", min_shared_prefix, allow_none=False)
        check_bool("add_bos_token", add_bos_token)
        check_bool("prefix_sharing", prefix_sharing, allow_none=False)
        check_bool("prefix_reuse", prefix_reuse, allow_none=False)

    # ---------------------------------------------------------------- info
    def info(self) -> dict[str, Any]:
        return {
            "backend": "hf",
            "engine": self.engine,
            "cpu_threads": getattr(self, "threads_note", None),
            "path": self._resolved.path,
            "adapter": self._resolved.adapter,
            "dtype": self.dtype,
            "device": self.device,
            "max_length": self.max_length,
            "add_bos_token": self.add_bos_token,
            "chat_template": self.tokenizer.chat_template,
            "prefix_sharing": self.prefix_sharing,
            "prefix_reuse": self.prefix_reuse,
        }

    def close(self) -> None:
        self.model = None  # drops this backend's reference only: a model handed in stays its owner's

    # ---------------------------------------------------------------- tokens
    # ---------------------------------------------------------------- loglikelihood
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], done: Done) -> None:
        rows: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for i, r in enumerate(requests):
            ctx, cont = self._encode_pair(r.context, r.continuation)
            full = (ctx + cont)[-(self.max_length + 1) :]
            cont = cont[-len(full) + 1 :] if len(cont) >= len(full) else cont
            rows.setdefault(tuple(full[:-1]), []).append((i, cont))
        for prefix_len, cluster in self._clusters(list(rows.items())):
            self._score_cluster(prefix_len, cluster, done)

    def _clusters(self, rows: list[Row]) -> list[tuple[int, list[Row]]]:
        """Group rows by a shared token prefix; each cluster gets the prefix length it can reuse."""
        rows.sort(key=lambda row: row[0])
        clusters: list[tuple[int, list[Row]]] = []
        current: list[Row] = []
        lcp = 0
        for row in rows:
            if current:
                shared = prefix_kv.common_length(current[0][0], row[0], lcp)
                if self.prefix_sharing and shared >= self.min_shared_prefix:
                    current.append(row)
                    lcp = shared
                    continue
                clusters.append((lcp, current))
            current, lcp = [row], len(row[0])
        if current:
            clusters.append((lcp, current))
        out = []
        for lcp, members in clusters:
            # every continuation's logits must come from the suffix part
            usable = min([lcp] + [len(inp) - max(len(c) for _, c in reqs) for inp, reqs in members])
            shared = usable if len(members) > 1 and usable >= self.min_shared_prefix else 0
            out.append((shared, members))
        return out

    def _score_cluster(self, prefix_len: int, rows: list[Row], done: Done) -> None:
        torch = self._torch
        cache = None
        with torch.inference_mode():
            if prefix_len:
                cache = prefix_kv.compute(self.model, rows[0][0][:prefix_len], self.device)
            rows = sorted(rows, key=lambda row: -len(row[0]))
            for batch in self._batches(rows, lambda row: len(row[0]) - prefix_len):
                t0 = time.perf_counter()
                self._score_batch(prefix_len, cache, batch, done, t0)

    def _score_batch(self, p: int, cache: Any, batch: list[Row], done: Done, t0: float) -> None:
        torch = self._torch
        suffixes = [inp[p:] for inp, _ in batch]
        width = max(len(s) for s in suffixes)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([list(s) + [pad] * (width - len(s)) for s in suffixes], device=self.device)
        mask = torch.tensor([[1] * (p + len(s)) + [0] * (width - len(s)) for s in suffixes], device=self.device)
        positions = torch.arange(p, p + width, device=self.device).expand(len(batch), -1)
        needed = sorted(
            {len(inp) - p - len(cont) + j for inp, reqs in batch for _, cont in reqs for j in range(len(cont))}
        )
        index = {pos: k for k, pos in enumerate(needed)}
        kwargs: dict[str, Any] = {}
        if cache is not None:
            kwargs["past_key_values"] = prefix_kv.copy_for(cache, len(batch))
        logits = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            logits_to_keep=torch.tensor(needed, device=self.device),
            use_cache=cache is not None,
            **kwargs,
        ).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        greedy = logprobs.argmax(dim=-1)
        latency = (time.perf_counter() - t0) / max(1, sum(len(reqs) for _, reqs in batch))
        for b, (inp, reqs) in enumerate(batch):
            for i, cont in reqs:
                cols = [index[len(inp) - p - len(cont) + j] for j in range(len(cont))]
                target = torch.tensor(cont, device=self.device)
                lp = logprobs[b, cols].gather(-1, target[:, None]).sum().item()
                is_greedy = bool((greedy[b, cols] == target).all().item())
                done(i, Output(logprob=lp, is_greedy=is_greedy, tokens_in=len(inp) + 1, latency_s=latency))

    def _batches(self, items: list[Any], length: Any) -> list[list[Any]]:
        """Length-sorted items cut into batches under the token budget (or a fixed batch size)."""
        batches: list[list[Any]] = []
        current: list[Any] = []
        for item in items:
            width = max([length(item)] + [length(x) for x in current[:1]])
            full = (
                len(current) >= self.batch_size
                if self.batch_size
                else (len(current) + 1) * width > self.max_batch_tokens or len(current) >= 64
            )
            if current and full:
                batches.append(current)
                current = []
            current.append(item)
        if current:
            batches.append(current)
        return batches

    # ---------------------------------------------------------------- generation
    def generate(self, requests: Sequence[GenerateRequest], done: Done) -> None:
        hf_generate.generate(self, requests, done)

    def _generate_batch(self, prompts: list[list[int]], max_tokens: int, stop: tuple[str, ...], temperature: float,
                        top_p: float, n: int, prefix: hf_generate.SharedPrefix | None = None,
                        on_tokens: Any = None) -> list[tuple[list[str], int]]:
        return hf_generate.generate_batch(self, prompts, max_tokens, stop, temperature, top_p, n, prefix, on_tokens)


def check_device(device: Any) -> None:
    """`device=cuda` on a machine without a visible GPU fails here, not after the model loads."""
    if device in ("auto", "cpu"):
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"--model-args device={device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--model-args device={device}: no CUDA GPU is visible here; use device=cpu or device=auto")
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"--model-args device={device}: only {count} CUDA GPU(s) visible (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--model-args device={device}: MPS is not available here; use device=cpu or device=auto")
