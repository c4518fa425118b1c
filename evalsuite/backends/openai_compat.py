"""Any OpenAI-compatible server (OpenAI, vLLM's `vllm serve`, llama.cpp's server, proxies).

The official `openai` async client does the HTTP; evalsuite does the retrying (the client's own
retries are off) so that every request gets exponential backoff with jitter, honours Retry-After,
and ends either with an answer or with `Output(error=...)`: a request that fails for good is
recorded and never scored as a wrong answer. Problems no retry can fix (bad key, unknown model or
endpoint, a server without echo/logprobs for log-likelihood) raise `BackendError` at once instead
of failing every sample one by one.

The event loop runs in a worker thread and hands finished outputs back to the caller's thread, so
`done()` (which writes the SQLite cache) always runs where the runner called us, and this also
works inside Jupyter's already-running loop.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import queue
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from evalsuite.backends import Done, check_choice, check_int, check_number, identity
from evalsuite.errors import BackendError, UsageError
from evalsuite.records import GenerateRequest, LoglikelihoodRequest, Output

CANNOT_LL = "this server cannot do log-likelihood tasks"
RETRY_STATUS = {408, 409, 425, 429}  # plus every 5xx
FATAL_STATUS = {401, 403, 404}  # no retry and no other request can succeed either
Emit = Callable[[int, Output], None]


class _Failed(Exception):
    """Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp): async, retries, usage and cost."""

    """This one request failed for good (after retries, or a 4xx about it alone)."""


class _Malformed(Exception):
    """The server answered 200 with a body that is not a usable completion: retried."""


class OpenAIBackend:
    """Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp): async, retries, usage and cost."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        endpoint: str = "auto",
        prices: Any = None,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        self.check_options(model, base_url=base_url, api_key_env=api_key_env, max_concurrency=max_concurrency,
                           timeout=timeout, max_retries=max_retries, endpoint=endpoint, prices=prices,
                           backoff_base=backoff_base, backoff_max=backoff_max)
        self.model_name = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        key = os.environ.get(api_key_env)
        self._api_key = key or "EMPTY"  # local servers (vLLM, llama.cpp) accept any key
        self.api_key_env = api_key_env
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout, self.max_retries, self.endpoint = float(timeout), int(max_retries), endpoint
        self.backoff_base, self.backoff_max = float(backoff_base), float(backoff_max)
        self.prices = _parse_prices(prices)
        self.usage = {"requests": 0, "errors": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}
        self._ll_max_tokens = 0  # echo-only scoring; some servers need 1 (found by the first request)
        self._ll_checked = False
        probe_retries = min(2, self.max_retries)
        self.server_model = self._run(lambda client, emit: self._probe_model(client, probe_retries))
        served = self.server_model or {}
        # what the server says it serves is all we know of its weights, dtype and template;
        # the endpoint decides how a plain-text prompt is sent (chat wraps it in a user turn)
        self.fingerprint = identity.fingerprint(engine="openai", weights=f"{model}|{self.base_url}|{served.get('id')}|"
                                                f"{served.get('root')}", options={"endpoint": endpoint})

    @classmethod
    def check_options(cls, model: str, base_url: Any = None, api_key_env: Any = "OPENAI_API_KEY", max_concurrency: Any = 8,
                      timeout: Any = 60.0, max_retries: Any = 5, endpoint: Any = "auto", prices: Any = None,
                      backoff_base: Any = 1.0, backoff_max: Any = 60.0) -> None:
        """Reject bad `--model-args` before the first request (no server is contacted here)."""
        check_choice("endpoint", endpoint, ("auto", "chat", "completions"))
        if base_url is not None and not (isinstance(base_url, str) and base_url.startswith(("http://", "https://"))):
            raise UsageError(f"--base-url {base_url!r}: expected an http:// or https:// URL such as http://127.0.0.1:8000/v1")
        check_int("max_concurrency", max_concurrency, allow_none=False)
        check_int("max_retries", max_retries, minimum=0, allow_none=False)
        check_number("timeout", timeout, allow_none=False)
        check_number("backoff_base", backoff_base, low=-1e-12, allow_none=False)
        check_number("backoff_max", backoff_max, low=-1e-12, allow_none=False)
        _parse_prices(prices)
        if not os.environ.get(str(api_key_env)) and not base_url:
            raise BackendError(f"set {api_key_env} to your API key (or pass --base-url for a local server)")

    # ---------------------------------------------------------------- protocol
    def info(self) -> dict[str, Any]:
        return {
            "backend": "openai",
            "engine": "openai",
            "base_url": self.base_url,
            "endpoint": self.endpoint,
            "server_model": self.server_model,
            "max_concurrency": self.max_concurrency,
            "prices_per_1m": self.prices,
            "usage": self.usage,  # live totals: grows as requests finish
        }

    def close(self) -> None:
        pass  # each call opens and closes its own HTTP client (they are bound to one event loop)

    def generate(self, requests: Sequence[GenerateRequest], done: Done) -> None:
        if requests:
            self._run(lambda client, emit: self._fan_out(client, emit, list(enumerate(requests)), self._generate_one), done)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], done: Done) -> None:
        if not requests:
            return
        if self.endpoint == "chat":
            raise BackendError(f"{CANNOT_LL}: endpoint=chat has no echo/logprobs of the prompt (use completions)")

        async def body(client: Any, emit: Emit) -> None:
            items = list(enumerate(requests))
            if not self._ll_checked:  # one request first: a server that cannot do it fails once, clearly
                k = min(range(len(requests)), key=lambda i: len(requests[i].context) + len(requests[i].continuation))
                try:  # the shortest, so that a too-long prompt is not mistaken for a missing feature
                    first = await self._loglikelihood_one(client, requests[k], probe=True)
                except BackendError as exc:
                    raise BackendError(str(exc) if CANNOT_LL in str(exc) else f"{CANNOT_LL}: {exc}") from None
                self._ll_checked = True
                self._account(first)
                emit(k, first)
                items = items[:k] + items[k + 1:]
            await self._fan_out(client, emit, items, self._loglikelihood_one)

        self._run(body, done)

    # ---------------------------------------------------------------- event loop plumbing
    def _run(self, body: Callable[[Any, Emit], Awaitable[Any]], done: Done | None = None) -> Any:
        """Run `body(client, emit)` on a fresh loop in a worker thread; call `done` here as outputs arrive."""
        results: queue.Queue = queue.Queue()
        box: dict[str, Any] = {}

        async def main() -> Any:
            from openai import AsyncOpenAI

            box["task"] = asyncio.current_task()
            box["loop"] = asyncio.get_running_loop()
            client = AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0)
            try:
                return await body(client, lambda i, out: results.put(("out", (i, out))))
            finally:
                await client.close()

        def worker() -> None:
            try:
                results.put(("result", asyncio.run(main())))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                results.put(("raise", exc))

        thread = threading.Thread(target=worker, name="evalsuite-openai", daemon=True)
        thread.start()
        try:
            while True:
                kind, value = results.get()
                if kind == "out" and done is not None:
                    done(*value)
                elif kind == "raise":
                    raise value
                elif kind == "result":
                    return value
        except KeyboardInterrupt:
            if "loop" in box:
                box["loop"].call_soon_threadsafe(box["task"].cancel)
            thread.join(timeout=5)
            raise

    async def _fan_out(self, client: Any, emit: Emit, items: list[tuple[int, Any]], one: Callable[..., Awaitable[Output]]) -> None:
        sem = asyncio.Semaphore(self.max_concurrency)

        async def run(i: int, request: Any) -> None:
            async with sem:
                out = await one(client, request)
            self._account(out)
            emit(i, out)

        await asyncio.gather(*(run(i, r) for i, r in items))

    async def _call(self, fn: Callable[..., Awaitable[Any]], retries: int | None = None, **params: Any) -> Any:
        """One API call with evalsuite's retry policy; raises `_Failed` or `BackendError` at the end."""
        import openai

        retries = self.max_retries if retries is None else retries
        for attempt in range(retries + 1):
            wait: float | None = None
            try:
                return _checked(await fn(**params))
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status in FATAL_STATUS:
                    raise BackendError(_fatal_message(status, self, exc)) from exc
                if status not in RETRY_STATUS and status < 500:
                    raise _Failed(f"HTTP {status}: {_message(exc)}") from exc
                reason, wait = f"HTTP {status}: {_message(exc)}", _retry_after(exc.response)
            except openai.APIConnectionError as exc:  # includes APITimeoutError
                reason = f"{type(exc).__name__}: {exc} ({self.base_url})"
            except (openai.APIResponseValidationError, _Malformed, ValueError) as exc:  # ValueError: bad JSON
                reason = f"malformed response: {str(exc)[:200]}"
            if attempt == retries:
                raise _Failed(f"{reason} (gave up after {retries + 1} attempts)")
            backoff = min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
            await asyncio.sleep(min(self.backoff_max, wait) if wait is not None else backoff)
        raise AssertionError("unreachable")  # pragma: no cover

    def _account(self, out: Output) -> None:
        self.usage["requests"] += 1
        self.usage["errors"] += out.error is not None
        self.usage["tokens_in"] += out.tokens_in
        self.usage["tokens_out"] += out.tokens_out
        if self.prices:
            out.extra["cost_usd"] = (out.tokens_in * self.prices["input"] + out.tokens_out * self.prices["output"]) / 1e6
            self.usage["cost_usd"] += out.extra["cost_usd"]

    # ---------------------------------------------------------------- requests
    async def _probe_model(self, client: Any, retries: int) -> dict[str, Any] | None:
        """What the server says it serves: part of the fingerprint (vLLM reports the weights' path)."""
        import openai

        try:
            page = await self._call(client.models.list, retries=retries)
        except BackendError as exc:
            if isinstance(exc.__cause__, openai.NotFoundError):
                return None  # a server without /models: the name and URL are all we know
            raise
        except _Failed as exc:
            raise BackendError(f"cannot reach the server at {self.base_url}: {exc}") from None
        models = list(getattr(page, "data", None) or [])
        match = next((m for m in models if getattr(m, "id", None) == self.model_name), None)
        if match is None:
            return {"id": None, "listed": [getattr(m, "id", "?") for m in models][:20]}
        return {"id": match.id, "root": getattr(match, "root", None), "owned_by": getattr(match, "owned_by", None)}

    def _uses_chat(self, prompt: Any) -> bool:
        if self.endpoint == "completions" and not isinstance(prompt, str):
            raise BackendError("endpoint=completions cannot send chat messages; use endpoint=auto or chat")
        return self.endpoint == "chat" or not isinstance(prompt, str)

    async def _generate_one(self, client: Any, r: GenerateRequest) -> Output:
        t0 = time.perf_counter()
        chat = self._uses_chat(r.prompt)
        want = r.n if r.temperature > 0 else 1  # greedy: one sample, repeated (no tokens paid twice)
        texts: list[str] = []
        finish: list[str | None] = []
        tokens_in = tokens_out = 0
        try:
            while len(texts) < want:  # servers that ignore `n` (llama.cpp) get asked again
                fn, params = self._generate_call(client, r, chat, want - len(texts))
                resp = await self._call(fn, **params)
                if not resp.choices:
                    raise _Failed("the server returned no choices")
                for choice in resp.choices:
                    text = (choice.message.content if chat else choice.text) or ""
                    texts.append(identity.cut_at_stop(text, r.stop))
                    finish.append(getattr(choice, "finish_reason", None))
                usage = getattr(resp, "usage", None)
                tokens_in = max(tokens_in, getattr(usage, "prompt_tokens", 0) or 0)
                tokens_out += getattr(usage, "completion_tokens", 0) or 0
        except _Failed as exc:
            return Output(error=str(exc), latency_s=time.perf_counter() - t0)
        texts = texts[:want] * (r.n if want == 1 else 1)
        extra = {"finish_reason": finish[: len(texts)], "endpoint": "chat" if chat else "completions"}
        return Output(texts=texts, tokens_in=tokens_in, tokens_out=tokens_out, latency_s=time.perf_counter() - t0, extra=extra)

    def _generate_call(self, client: Any, r: GenerateRequest, chat: bool, n: int) -> tuple[Any, dict[str, Any]]:
        params: dict[str, Any] = {"model": self.model_name, "max_tokens": r.max_tokens, "temperature": r.temperature,
                                  "top_p": r.top_p, "n": n}
        if r.seed is not None:
            params["seed"] = r.seed
        if r.stop:
            params["stop"] = list(r.stop[:4])  # OpenAI takes at most 4; the rest are cut here
        if chat:
            messages = [{"role": "user", "content": r.prompt}] if isinstance(r.prompt, str) else [dict(m) for m in r.prompt]
            return client.chat.completions.create, {"messages": messages, **params}
        return client.completions.create, {"prompt": r.prompt, **params}

    async def _loglikelihood_one(self, client: Any, r: LoglikelihoodRequest, probe: bool = False) -> Output:
        """Score with echo: the prompt's own token log-probs, continuation tokens found by text offsets."""
        t0 = time.perf_counter()
        context, continuation = identity.shift_whitespace(r.context, r.continuation)
        text = context + continuation
        try:
            while True:
                params = {"model": self.model_name, "prompt": text, "echo": True, "logprobs": 1,
                          "max_tokens": self._ll_max_tokens, "temperature": 0.0}
                try:
                    resp = await self._call(client.completions.create, **params)
                    break
                except _Failed as exc:
                    if probe and self._ll_max_tokens == 0 and "HTTP 4" in str(exc):
                        self._ll_max_tokens = 1  # a server that wants at least one new token
                        continue
                    if probe and "HTTP 4" in str(exc):
                        raise BackendError(f"{CANNOT_LL}: {exc}") from None
                    raise
            logprob, is_greedy = _continuation_logprob(resp, len(context), len(text))
        except _Failed as exc:
            return Output(error=str(exc), latency_s=time.perf_counter() - t0)
        except _Malformed as exc:
            if probe:
                raise BackendError(f"{CANNOT_LL}: {exc}") from None
            return Output(error=str(exc), latency_s=time.perf_counter() - t0)
        usage = getattr(resp, "usage", None)
        tokens_in = getattr(usage, "prompt_tokens", 0) or 0
        return Output(logprob=logprob, is_greedy=is_greedy, tokens_in=tokens_in, latency_s=time.perf_counter() - t0)


# -------------------------------------------------------------------- helpers
def _continuation_logprob(resp: Any, start: int, end: int) -> tuple[float, bool | None]:
    """Sum the log-probs of the echoed tokens that hold any character of text[start:end]."""
    choices = getattr(resp, "choices", None) or []
    lp = getattr(choices[0], "logprobs", None) if choices else None
    offsets = getattr(lp, "text_offset", None)
    token_lps = getattr(lp, "token_logprobs", None)
    if not offsets or token_lps is None or len(offsets) != len(token_lps):
        raise _Malformed("the response has no echoed prompt log-probs (logprobs/echo unsupported)")
    tops = getattr(lp, "top_logprobs", None) or [None] * len(offsets)
    ends = list(offsets[1:]) + [end]
    picked = [k for k in range(len(offsets)) if offsets[k] < end and min(ends[k], end) > start]
    if not picked or offsets[0] > 0 or (offsets[-1] < start):
        raise _Malformed("the echoed tokens do not cover the prompt (echo unsupported)")
    if any(token_lps[k] is None for k in picked):
        raise _Failed("the first token has no log-prob (empty context): this server adds no BOS token to condition on")
    greedy: bool | None = True
    for k in picked:
        if not tops[k]:
            greedy = None
            break
        greedy = greedy and token_lps[k] >= max(tops[k].values()) - 1e-5
    return float(sum(token_lps[k] for k in picked)), greedy


def _checked(resp: Any) -> Any:
    """A 200 whose body is not a completion (a proxy's HTML page, truncated JSON) is retried."""
    if isinstance(resp, (str, bytes)):
        raise _Malformed(f"expected JSON, got: {str(resp)[:120]!r}")
    if hasattr(resp, "choices") and not isinstance(resp.choices, list):
        raise _Malformed("no 'choices' in the response")
    return resp


def _retry_after(response: Any) -> float | None:
    """Seconds the server asked us to wait (Retry-After in seconds or as a date; OpenAI's -ms header)."""
    headers = getattr(response, "headers", None) or {}
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        msg = inner.get("message") if isinstance(inner, dict) else inner
        if msg:
            return str(msg)[:300]
    return str(getattr(exc, "message", exc))[:300]


def _fatal_message(status: int, b: OpenAIBackend, exc: Any) -> str:
    if status in (401, 403):
        return f"{b.base_url} refused the API key (HTTP {status}): set {b.api_key_env}. {_message(exc)}"
    return (f"HTTP 404 from {b.base_url}: {_message(exc)} (check --base-url, the model name '{b.model_name}', "
            "and whether the server has this endpoint: endpoint=chat for chat-only models)")


def _parse_prices(prices: Any) -> dict[str, float] | None:
    """USD per 1M tokens: {"input": x, "output": y}, (x, y), or "x/y" (what --model-args can carry)."""
    if prices in (None, "", {}):
        return None
    try:
        if isinstance(prices, str):
            a, b = prices.split("/")
            return {"input": float(a), "output": float(b)}
        if isinstance(prices, dict):
            return {"input": float(prices["input"]), "output": float(prices["output"])}
        a, b = prices
        return {"input": float(a), "output": float(b)}
    except (ValueError, KeyError, TypeError):
        raise BackendError(f"prices must be 'INPUT/OUTPUT' USD per 1M tokens (e.g. prices=2.5/10), got {prices!r}") from None

