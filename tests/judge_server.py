"""A real OpenAI-compatible judge server for tests (stdlib HTTP on 127.0.0.1, in a thread).

It answers `/v1/chat/completions` with a deterministic verdict chosen by `policy`, counts every
request, and can be switched to failing (HTTP 500) after a number of answers: enough to test
both-order logic, caching and the judge-server-down fault path without a GPU or network.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

ANSWER = re.compile(r"<assistant (A|B) answer (\d+)>\n(.*?)\n</assistant \1 answer \2>", re.DOTALL)


class JudgeServer:
    """policy: 'longer' (prefers the longer answer: a consistent judge), 'first' (always [[A]]:
    a fully position-biased judge), 'garbage' (no verdict); single grading answers Rating: [[7]]."""

    def __init__(self) -> None:
        self.policy = "longer"
        self.fail_after: int | None = None  # answer this many chat requests, then HTTP 500
        self.answered = 0
        self.failed = 0
        self.prompts: list[str] = []
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def verdict(self, prompt: str) -> str:
        if self.policy == "garbage":
            return "Both answers have merits."
        answers = {(m.group(1), int(m.group(2))): m.group(3) for m in ANSWER.finditer(prompt)}
        if not answers:
            return "Clear and correct.\nRating: [[7]]"
        if self.policy == "first":
            return "A is better.\n[[A]]"
        turn = max(t for _, t in answers)
        a, b = len(answers.get(("A", turn), "")), len(answers.get(("B", turn), ""))
        return "Comparison done.\n" + ("[[A]]" if a > b else "[[B]]" if b > a else "[[C]]")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "judge", "object": "model", "owned_by": "test"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = "\n".join(m["content"] for m in body["messages"])
                with server.lock:
                    if server.fail_after is not None and server.answered >= server.fail_after:
                        server.failed += 1
                        return self._send(500, {"error": {"message": "judge server is down"}})
                    server.answered += 1
                    server.prompts.append(prompt)
                self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": server.verdict(prompt)}}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}})

        return Handler

    def judge_args(self) -> dict[str, Any]:
        """--judge-args for the openai backend: fast retries so fault tests take milliseconds."""
        return {"base_url": self.url, "max_retries": 2, "backoff_base": 0.01, "backoff_max": 0.02,
                "max_concurrency": 1}

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class CountingBackend:
    """The real backend, with a count (and the list) of the generate requests that reach it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0
        self.requests: list[Any] = []

    def generate(self, requests: Any, done: Any) -> None:
        self.calls += len(requests)
        self.requests.extend(requests)
        self.inner.generate(requests, done)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    server = JudgeServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def smollm2_judge_backend(smollm2_dir: Any) -> Any:
    """SmolLM2-135M-Instruct in-process, loaded once for every judge test that needs a real model.

    One torch thread: on a shared 2-core box, two spinning OpenMP threads made each judge call
    ~8x slower; the numbers do not change.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from evalsuite.backends.hf import HFBackend

    backend = HFBackend(str(smollm2_dir))
    yield backend
    torch.set_num_threads(threads)
