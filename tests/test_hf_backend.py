"""The HF backend's numbers against a plain torch forward pass, and its request semantics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evalsuite.backends.hf import HFBackend
from evalsuite.backends.identity import cut_at_stop
from evalsuite.records import GenerateRequest, LoglikelihoodRequest, Output, chat

SHARED = "The following are questions about numbers and words, with answers.\n\n" + "Q: one plus one? A: two\n\n" * 6


def _collect(fn, requests) -> list[Output]:
    got: dict[int, Output] = {}
    fn(requests, lambda i, o: got.__setitem__(i, o))
    assert sorted(got) == list(range(len(requests))), "every request answered exactly once"
    return [got[i] for i in range(len(requests))]


def _direct(backend: HFBackend, req: LoglikelihoodRequest) -> tuple[float, bool]:
    """Sum of log-softmax of a plain, unbatched forward pass over context + continuation."""
    ctx, cont = backend._encode_pair(req.context, req.continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(backend.model(ids).logits.float(), -1)[0]
    rows = logprobs[len(ctx) - 1 : len(ctx) - 1 + len(cont)]
    target = torch.tensor(cont)
    return rows.gather(-1, target[:, None]).sum().item(), bool((rows.argmax(-1) == target).all())


REQUESTS = [
    *(LoglikelihoodRequest(SHARED + f"Q: {q}? A:", c) for q in ("two plus two", "three times three", "ten")
      for c in (" four", " nine", " A", " a much longer answer that spans tokens")),
    LoglikelihoodRequest("", "Hello world"),
    LoglikelihoodRequest("Trailing space ", "moves to the continuation"),
    LoglikelihoodRequest("short", " x"),
]


@pytest.mark.parametrize("prefix_sharing", [True, False])
def test_loglikelihood_equals_direct_forward(tiny_model_dir: Path, prefix_sharing: bool) -> None:
    backend = HFBackend(str(tiny_model_dir), prefix_sharing=prefix_sharing, max_batch_tokens=256)
    outs = _collect(backend.loglikelihood, REQUESTS)
    for req, out in zip(REQUESTS, outs):
        expected, greedy = _direct(backend, req)
        assert out.logprob == pytest.approx(expected, abs=1e-4), req
        assert out.is_greedy == greedy


def test_shared_prefix_is_actually_shared(tiny_model_dir: Path) -> None:
    backend = HFBackend(str(tiny_model_dir))
    rows = {}
    for r in REQUESTS[:12]:
        ctx, cont = backend._encode_pair(r.context, r.continuation)
        full = ctx + cont
        rows.setdefault(tuple(full[:-1]), []).append((0, cont))
    clusters = backend._clusters(list(rows.items()))
    assert len(clusters) == 1 and clusters[0][0] >= 32, "the 6-shot prefix forms one cluster"


def test_encode_pair_moves_trailing_whitespace(tiny_model_dir: Path) -> None:
    backend = HFBackend(str(tiny_model_dir))
    ctx, cont = backend._encode_pair("Answer: ", "Paris")
    assert backend.tokenizer.decode(ctx) == "Answer:"
    assert backend.tokenizer.decode(cont) == " Paris"


def test_generation_batched_equals_single_and_stops(tiny_model_dir: Path) -> None:
    prompts = [f"Count: {' '.join(str(i) for i in range(n))}" for n in (1, 5, 12)]
    reqs = [GenerateRequest(p, max_tokens=12) for p in prompts]
    batched = _collect(HFBackend(str(tiny_model_dir), batch_size=3).generate, reqs)
    single = _collect(HFBackend(str(tiny_model_dir), batch_size=1).generate, reqs)
    assert [o.texts for o in batched] == [o.texts for o in single]
    assert all(0 < o.tokens_out <= 12 for o in batched)
    # a stop sequence taken from the greedy output itself must cut it there
    text = batched[2].text
    if len(text) > 4:
        stop = text[2:4]
        cut = _collect(HFBackend(str(tiny_model_dir)).generate, [GenerateRequest(prompts[2], max_tokens=12, stop=(stop,))])
        assert cut[0].text == text[: text.find(stop)]


def testcut_at_stop() -> None:
    assert cut_at_stop("abc Question: x", ("Question:", "zzz")) == "abc "
    assert cut_at_stop("abc", ()) == "abc"


def test_greedy_n_samples_replicated_and_sampling_seeded(tiny_model_dir: Path) -> None:
    backend = HFBackend(str(tiny_model_dir))
    greedy = _collect(backend.generate, [GenerateRequest("Hi", max_tokens=5, n=3)])[0]
    assert len(greedy.texts) == 3 and len(set(greedy.texts)) == 1
    sampled = [GenerateRequest("Hi", max_tokens=8, n=4, temperature=1.0, seed=s) for s in (1, 1, 2)]
    a, b, c = _collect(backend.generate, sampled)
    assert a.texts == b.texts, "same seed, same samples"
    assert len(a.texts) == 4 and a.texts != c.texts


def test_chat_prompt_uses_template(tiny_model_dir: Path) -> None:
    backend = HFBackend(str(tiny_model_dir))
    text = backend.render(chat("What is 2+2?"))
    assert "What is 2+2?" in text and text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_real_smollm2_answers_paris() -> None:
    backend = HFBackend("smollm2-135m")
    out = _collect(backend.generate, [GenerateRequest(chat("What is the capital of France?"), max_tokens=20)])[0]
    assert "Paris" in out.text
    good, bad = _collect(backend.loglikelihood, [
        LoglikelihoodRequest("The capital of France is", " Paris"),
        LoglikelihoodRequest("The capital of France is", " Potato"),
    ])
    assert good.logprob > bad.logprob


def test_chat_prompts_stop_at_the_chatml_end_of_turn_text(tiny_model_dir: Path) -> None:
    """A base model trained on ChatML as plain text ends its turn with '<|im_end|>' text, not EOS.

    Found on gemma-3-270m after SFT: 23/100 answers ran on into invented user turns.
    """
    backend = HFBackend(str(tiny_model_dir))
    seen: list[tuple[str, ...]] = []
    real = backend._generate_batch

    def spy(prompts, max_tokens, stop, *rest):  # records the stops, runs the real generation
        seen.append(stop)
        return real(prompts, max_tokens, stop, *rest)

    backend._generate_batch = spy  # type: ignore[method-assign]
    outs = _collect(backend.generate, [GenerateRequest(chat("Hi"), max_tokens=4, stop=("\n\n",)),
                                       GenerateRequest("Hi", max_tokens=4, stop=("\n\n",))])
    assert sorted(seen) == [("\n\n",), ("\n\n", "<|im_end|>")]
    assert all("<|im_end|>" not in o.text for o in outs)
