"""GGUF export of the real SmolLM2-135M, checked by readers that share no code with the writer.

Two independent checks, both run on every type the writer offers (f16, q8_0, q4_0):
- tensor by tensor: `gguf.GGUFReader` reads each tensor, the test maps llama.cpp's names back to
  Hugging Face's with its own table and undoes llama.cpp's interleaved q/k rotary layout with its own
  index arithmetic; transformers' GGUF loader (its own name map and reverse permute) gives a second
  copy. Every element must lie within the rounding bound of its type: f32 exact, f16 half an ulp,
  q8_0 / q4_0 a fraction of their block's scale (see `_bound`);
- behaviour: transformers loads the file as a model; its logits on a few prompts match the source.
The bounds are proven tight enough by fault injection below: a writer without the q/k permute, one
that swaps two layers, and one that zeroes a single weight each produce a file the checks reject.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "Water boils at a temperature of"]
# Measured on SmolLM2-135M over every position of PROMPTS (max |log p diff|, mean KL, top-1 agreement):
# f16 0.03 / <1e-4 / 1.0; q8_0 0.60 / <0.02 / >= 0.86; q4_0 15 / 0.55-1.67 / 0.2-0.67 (its source is
# itself a dequantized Q4_1; re-quantized to Q4_0's grid it is that lossy). A writer without the q/k
# permute: f16 4.9-13 / 0.10-0.59 / 0.8-0.86, caught at f16; at q4_0 it is hidden in the rounding
# noise (KL 0.71-1.93), so for q4_0 the logits are a sanity check and the tensor bound is the guard.
LOGPROB_ATOL = {"f16": 0.1, "q8_0": 1.5}
KL_MAX = {"f16": 1e-4, "q8_0": 0.02, "q4_0": 2.5}
TOP1_MIN = {"f16": 1.0, "q8_0": 0.8, "q4_0": 0.1}

_HF_NAMES = {  # llama.cpp's tensor names (llama.cpp/gguf-py/gguf/constants.py) -> Hugging Face's
    "token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


@pytest.fixture(scope="module")
def source(smollm2_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v for f in sorted(smollm2_dir.glob("model*.safetensors")) for k, v in load_file(f).items()}


@pytest.fixture(scope="module")
def reference_logits(smollm2_dir: Path) -> list[Any]:
    import torch
    from transformers import AutoModelForCausalLM

    return _logits(AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32), smollm2_dir)


def _logits(model: Any, tok_dir: Path) -> list[Any]:
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    with torch.no_grad():
        return [model.eval()(**tok(p, return_tensors="pt")).logits[0].float() for p in PROMPTS]


def _hf_rows_from_interleaved(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp stores each head's rotary pairs interleaved (row 2j, 2j+1 = HF rows j, j + d/2)."""
    d = w.shape[0] // n_head
    order = np.empty(w.shape[0], dtype=np.int64)  # order[hf row] = gguf row
    for h in range(n_head):
        for j in range(d // 2):
            order[h * d + j] = h * d + 2 * j
            order[h * d + d // 2 + j] = h * d + 2 * j + 1
    return w[order]


def read_gguf(path: Path, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every tensor of `path`, dequantized to float32, under its HF name and in HF's layout."""
    import gguf

    out = {}
    for t in gguf.GGUFReader(path).tensors:
        m = re.fullmatch(r"(?:blk\.(\d+)\.)?(\w+)\.weight", t.name)
        assert m, f"unexpected tensor name {t.name}"
        layer, short = m.groups()
        name = (f"model.layers.{layer}." if layer is not None else "") + _HF_NAMES[short] + ".weight"
        data = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        if short in ("attn_q", "attn_k"):
            heads = cfg["num_attention_heads"] if short == "attn_q" else cfg["num_key_value_heads"]
            data = _hf_rows_from_interleaved(data, heads)
        out[name] = data
    return out


def _bound(ref: np.ndarray, kind: str) -> np.ndarray:
    """Largest error each element may have after a round trip through `kind`.

    f16: half an ulp (2**-11 relative, 2**-25 absolute below the normal range). q8_0: a block of 32
    stores round(x / d) with d = amax / 127 (d itself in f16): error <= d / 2 + 127 d 2**-11 < 0.6 d.
    q4_0: d = amax / 8, and the top code is 7 not 8: error <= d (+ f16 rounding of d) < 1.05 d.
    Zeroing a block's largest weight costs amax = 127 d or 8 d: far outside both.
    """
    if ref.ndim == 1:
        return np.zeros_like(ref)  # norms stay f32: exact
    if kind == "f16":
        return np.abs(ref) * 2.0**-11 + 2.0**-25
    blocks = np.abs(ref).reshape(*ref.shape[:-1], -1, 32).max(axis=-1, keepdims=True)
    d = blocks / 127 * 0.6 if kind == "q8_0" else blocks / 8 * 1.05
    return np.broadcast_to(d, (*ref.shape[:-1], ref.shape[-1] // 32, 32)).reshape(ref.shape) * (1 + 1e-6) + 1e-12


def tensor_mismatches(got: dict[str, np.ndarray], source: dict[str, np.ndarray], kind: str,
                      tied: bool = True) -> list[str]:
    """What differs between `got` and the source weights beyond `kind`'s rounding (empty: identical)."""
    want = {k: v for k, v in source.items() if not (tied and k == "lm_head.weight")}
    got = {k: v for k, v in got.items() if not (tied and k == "lm_head.weight")}
    problems = [f"missing {k}" for k in sorted(set(want) - set(got))]
    problems += [f"unexpected {k}" for k in sorted(set(got) - set(want))]
    for name in sorted(set(want) & set(got)):
        ref, val = want[name].astype(np.float32), np.asarray(got[name], dtype=np.float32)
        if ref.shape != val.shape:
            problems.append(f"{name}: shape {val.shape} != {ref.shape}")
            continue
        over = np.abs(val - ref) > _bound(ref, kind)
        if over.any():
            i = np.unravel_index(int(np.argmax(np.abs(val - ref))), ref.shape)
            problems.append(f"{name}: {int(over.sum())} elements off, worst at {tuple(map(int, i))}: "
                            f"{val[i]:.6g} vs {ref[i]:.6g}")
    return problems


def logits_mismatches(ref: list[Any], got: list[Any], kind: str) -> list[str]:
    import torch

    problems = []
    for prompt, a, b in zip(PROMPTS, ref, got):
        la, lb = a.log_softmax(-1), b.log_softmax(-1)
        kl = float((la.exp() * (la - lb)).sum(-1).mean())
        top1 = float((a.argmax(-1) == b.argmax(-1)).float().mean())
        diff = float((la - lb).abs().max())
        if kl > KL_MAX[kind] or top1 < TOP1_MIN[kind] or diff > LOGPROB_ATOL.get(kind, torch.inf):
            problems.append(f"{prompt!r}: KL {kl:.3g}, top-1 agreement {top1:.2f}, max log-prob diff {diff:.3g}")
    return problems


def _export(src: Path, tmp: Path, kind: str) -> Path:
    from evalsuite.trainers.gguf_export import write_gguf

    return write_gguf(src, tmp / f"model-{kind}.gguf", kind)


@pytest.mark.parametrize("kind", ["f16", "q8_0", "q4_0"])
def test_gguf_export_matches_the_source_tensor_by_tensor_and_in_logits(
        tmp_path: Path, smollm2_dir: Path, source: dict, reference_logits: list, kind: str) -> None:
    """Every tensor of the exported SmolLM2-135M is within its type's rounding of the source weight
    (read by `gguf.GGUFReader` and by transformers' GGUF loader), the file's tensors use that type, and
    transformers runs it with the source's log-probs (tolerances per type, see LOGPROB_ATOL / KL_MAX)."""
    import json

    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = json.loads((smollm2_dir / "config.json").read_text())
    path = _export(smollm2_dir, tmp_path, kind)
    types = {t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert types == ({"F32", kind.upper()}), types
    assert tensor_mismatches(read_gguf(path, cfg), source, kind) == []

    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    loaded = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    assert tensor_mismatches(loaded, source, kind) == []
    assert logits_mismatches(reference_logits, _logits(model, smollm2_dir), kind) == []
    if kind == "f16":  # the tokenizer and chat template travel too
        tok, ref_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name), AutoTokenizer.from_pretrained(smollm2_dir)
        assert tok.chat_template == ref_tok.chat_template
        for p in PROMPTS:
            assert tok(p)["input_ids"] == ref_tok(p)["input_ids"]


def _swap_layers(a: int, b: int):
    def rename(name: str) -> str:
        return re.sub(r"^blk\.(\d+)\.", lambda m: f"blk.{ {a: b, b: a}.get(int(m[1]), int(m[1])) }.", name)

    return lambda name, data: (rename(name), data)


def _zero_largest(target: str):
    def mutate(name: str, data: np.ndarray) -> tuple[str, np.ndarray]:
        if name == target:
            data = data.copy()
            data.flat[int(np.argmax(np.abs(data.astype(np.float32))))] = 0
        return name, data

    return mutate


@pytest.mark.parametrize("mutation, kind", [("no-qk-permute", "f16"), ("no-qk-permute", "q4_0"),
                                            ("layers-3-4-swapped", "f16"), ("one-weight-zeroed", "f16")])
def test_the_checks_reject_a_broken_writer(tmp_path: Path, smollm2_dir: Path, source: dict,
                                           reference_logits: list, monkeypatch: pytest.MonkeyPatch,
                                           mutation: str, kind: str) -> None:
    """Fault injection: the writer is broken on purpose and the tensor check must fail on the file.

    no-qk-permute: `_permute` is the identity (HF's rotate-half layout written as is);
    layers-3-4-swapped: blocks 3 and 4 trade names; one-weight-zeroed: the largest weight of
    blk.7.ffn_down (one element of 884,736) is written as 0. The missing permute also breaks the
    f16 logits check, through transformers' loader (its own reverse permute then scrambles q and k);
    at q4_0 only the tensor check can see it (see the numbers above LOGPROB_ATOL).
    """
    import json

    import gguf

    from evalsuite.trainers import gguf_export

    cfg = json.loads((smollm2_dir / "config.json").read_text())
    if mutation == "no-qk-permute":
        monkeypatch.setattr(gguf_export, "_permute", lambda w, n_head: w)
    else:
        mutate = _swap_layers(3, 4) if mutation == "layers-3-4-swapped" else _zero_largest("blk.7.ffn_down.weight")
        original = gguf.GGUFWriter.add_tensor

        def add_tensor(self: Any, name: str, tensor: np.ndarray, *args: Any, **kwargs: Any) -> None:
            name, tensor = mutate(name, tensor)
            original(self, name, tensor, *args, **kwargs)

        monkeypatch.setattr(gguf.GGUFWriter, "add_tensor", add_tensor)
    path = _export(smollm2_dir, tmp_path, kind)
    problems = tensor_mismatches(read_gguf(path, cfg), source, kind)
    expected = {"no-qk-permute": r"self_attn\.[qk]_proj", "layers-3-4-swapped": r"model\.layers\.[34]\.",
                "one-weight-zeroed": r"model\.layers\.7\.mlp\.down_proj"}[mutation]
    assert problems, f"{mutation}: the tensor check passed a broken file"
    assert all(re.search(expected, p) for p in problems), problems
    if mutation == "one-weight-zeroed":
        assert len(problems) == 1 and "1 elements off" in problems[0], problems
    if mutation == "no-qk-permute" and kind == "f16":
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
        assert logits_mismatches(reference_logits, _logits(model, smollm2_dir), "f16")
