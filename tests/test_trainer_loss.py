"""The trainer's chunked loss: the same loss and gradients as full logits, without vocabulary-sized tensors."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalsuite.chat_template import CHATML_TEMPLATE
from evalsuite.trainers import packing
from evalsuite.trainers.loss import chunked_cross_entropy, token_loss_sum


def _plain_loss(model, t: dict):
    """The reference: the model's full logits, cross-entropy at the target positions."""
    import torch.nn.functional as F

    keep = t["targets"] != packing.IGNORE
    logits = model(input_ids=t["input_ids"], position_ids=t["position_ids"], use_cache=False).logits
    return F.cross_entropy(logits[keep].float(), t["targets"][keep], reduction="sum")


def _real_batch(tokenizer, data_dir: Path, rows: int = 2, row_len: int = 256) -> dict:
    """A packed micro-batch of real Self-Instruct conversations, as the recipe builds it."""
    from evalsuite.trainers import data

    path = data_dir / "self_instruct" / "user_oriented_instructions.jsonl"
    convs = [c for r in data.read_records(str(path)) for c in data.to_conversations(r)][:40]
    examples = [e for c in convs
                if (e := packing.make_example(*packing.tokenize(tokenizer, c, CHATML_TEMPLATE, add_bos=False), row_len, "truncate"))]
    batch = next(packing.pack(iter(examples), rows, row_len, True))
    return packing.collate(batch, tokenizer.pad_token_id)


def _grads(model) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow
@pytest.mark.timeout(1800)  # three passes of the real model: minutes on a loaded 2-core machine
def test_chunked_loss_and_lora_grads_equal_full_logits_on_a_real_batch(smollm2_dir: Path, shared_data: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches: a chunked head that drops or double-counts a chunk, misses a target, or returns a wrong gradient
    (softmax minus one-hot) for the hidden states: SmolLM2-135M with LoRA on every linear layer, a real packed
    2 x 256 micro-batch, the 49k vocabulary head in chunks of 64 tokens."""
    import torch
    import torch.nn.functional as F
    from evalsuite.trainers import loss
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    real = loss.chunked_cross_entropy
    monkeypatch.setattr(loss, "chunked_cross_entropy", lambda *a: real(*a, chunk_elems=64 * a[1].size(0)))
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                            task_type="CAUSAL_LM", init_lora_weights=False))  # non-zero B: real grads
    t = _real_batch(tok, shared_data)
    keep = t["targets"] != packing.IGNORE
    assert int(keep.sum()) > 64  # several chunks

    ref = _plain_loss(model, t)
    ref.backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    seen = []
    hook = model.get_decoder().norm.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    got = token_loss_sum(model, t, "cpu")
    hook.remove()
    got.backward()
    have = _grads(model)

    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    # and closer to exact than the plain fp32 head (measured on a 4 x 256 batch: 4e-5 vs 4.5e-3 off)
    exact = F.cross_entropy(seen[0][keep].double() @ model.get_output_embeddings().weight.double().T,
                            t["targets"][keep], reduction="sum").item()
    assert abs(got.item() - exact) <= 1e-6 * abs(exact)
    assert want.keys() == have.keys() and len(want) > 100  # every LoRA matrix, nothing else
    for name, g in want.items():  # relative to the tensor's norm: 30 layers of fp32 backward blur single elements
        assert (have[name] - g).norm() <= 1e-3 * g.norm(), name


@pytest.mark.parametrize("chunk_elems", [1 << 23, 3 * 49152])
def test_full_finetune_grads_include_the_tied_head(tiny_model_dir: Path, shared_data: Path, chunk_elems: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches: the chunked head forgetting the head's own gradient when it trains (full fine-tuning; SmolLM2's head
    is tied to the input embeddings) or mis-slicing the last, shorter chunk."""
    import torch
    from evalsuite.trainers import loss
    from transformers import AutoModelForCausalLM, AutoTokenizer

    real = loss.chunked_cross_entropy
    monkeypatch.setattr(loss, "chunked_cross_entropy", lambda *a: real(*a, chunk_elems=chunk_elems))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    t = _real_batch(tok, shared_data)
    ref = _plain_loss(model, t)
    ref.backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    got = token_loss_sum(model, t, "cpu")
    got.backward()
    have = _grads(model)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    assert "model.embed_tokens.weight" in have and want.keys() == have.keys()
    for name, g in want.items():
        assert torch.allclose(have[name], g, rtol=1e-3, atol=1e-4 * g.abs().max().item()), name


def test_bias_no_grad_and_autocast_match_plain_cross_entropy() -> None:
    """Catches: a head bias left out of the logits or its gradient, gradients computed (and memory held) under
    no_grad, and bf16 autocast drifting from the plain head's precision (bf16 projection, fp32 softmax)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(101, 16, requires_grad=True)
    b = torch.randn(101, requires_grad=True)
    t = torch.randint(0, 101, (37,))
    ref = F.cross_entropy(F.linear(h, w, b), t, reduction="sum")
    ref_grads = torch.autograd.grad(ref, (h, w, b))
    got = chunked_cross_entropy(h, w, b, t, chunk_elems=5 * 101)  # 8 chunks, the last of 2 rows
    for g, r in zip(torch.autograd.grad(got, (h, w, b)), ref_grads):
        assert torch.allclose(g, r, rtol=1e-4, atol=1e-5)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    with torch.no_grad():
        assert chunked_cross_entropy(h, w, b, t).item() == pytest.approx(ref.item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_bf16 = F.cross_entropy(F.linear(h, w, b).float(), t, reduction="sum")
        chunked_bf16 = chunked_cross_entropy(h, w, b, t, chunk_elems=5 * 101)
    assert chunked_bf16.dtype == torch.float32
    assert chunked_bf16.item() == pytest.approx(plain_bf16.item(), rel=1e-3)


def test_nothing_vocabulary_sized_is_kept_for_backward(tiny_model_dir: Path, shared_data: Path) -> None:
    """Catches: the loss keeping (tokens x vocab) logits, softmax or their fp32 copies alive until backward, the
    activation that doubled the trainer's peak CUDA memory next to TRL's fused head."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.get_output_embeddings().weight.requires_grad_(False)  # frozen head (tied embeddings), as under LoRA
    t = _real_batch(tok, shared_data)
    n_targets = int((t["targets"] != packing.IGNORE).sum())
    sizes: list[int] = []

    def pack_hook(x):
        sizes.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda x: x):
        token_loss_sum(model, t, "cpu").backward()
    assert sizes and max(sizes) < n_targets * len(tok) / 4, (max(sizes), n_targets * len(tok))
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda x: x):
        _plain_loss(model, t).backward()
    assert max(sizes) >= n_targets * len(tok)  # the hook does see the plain head's logits


def test_distributed_path_keeps_only_target_logits(chaotic_model_dir: Path, shared_data: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches: the wrapped-model path (root forward, one flattened row, `logits_to_keep` = target positions)
    selecting the wrong positions. The model is context-sensitive (large random weights), so every position's
    logits differ and a shifted position changes the loss."""
    import torch
    from evalsuite.trainers import loss
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chaotic_model_dir)
    model = AutoModelForCausalLM.from_pretrained(chaotic_model_dir, dtype=torch.float32).eval()
    t = _real_batch(tok, shared_data)
    with torch.no_grad():
        ref = _plain_loss(model, t).item()
        monkeypatch.setattr(loss, "distributed_wrapper", lambda m: True)
        got = token_loss_sum(model, t, "cpu").item()
    assert got == pytest.approx(ref, rel=1e-5)
