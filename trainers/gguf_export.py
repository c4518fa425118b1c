"""GGUF export of a merged Llama-architecture model, written with the `gguf` package (ggml's own).

Hand-written because the reference converter (llama.cpp's `convert_hf_to_gguf.py`) is not
published on PyPI and llama.cpp is not installed here; `gguf` only provides the writer. This covers
the Llama family (SmolLM2, Llama 2/3, Mistral-style) with a GPT-2 byte-level BPE tokenizer, the
layout llama.cpp itself writes: q/k projections permuted to llama.cpp's rotary layout, 1-D tensors
(norms) in f32, the rest f16, q8_0 or q4_0 (`gguf.quants`). Other architectures get a clear error
naming the converter to use, before training (`device.preflight`). The tests load each file back
with transformers and compare logits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError


def _permute(w: Any, n_head: int) -> Any:
    """HF's rotate-half q/k layout -> llama.cpp's interleaved one (as convert_hf_to_gguf does)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


SUPPORTED_ARCH = "llama"
KINDS = ("f16", "q8_0", "q4_0")


def unsupported_arch_message(arch: str | None, where: object) -> str:
    return (f"GGUF export here supports llama-architecture models, not '{arch}': drop export.gguf and run "
            f"llama.cpp's convert_hf_to_gguf.py on the merged export of {where}")


def write_gguf(merged: Path, out: Path, kind: str = "f16") -> Path:
    import gguf
    import numpy as np
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    cfg = json.loads((merged / "config.json").read_text())
    if cfg.get("model_type") != SUPPORTED_ARCH:
        raise UsageError(unsupported_arch_message(cfg.get("model_type"), merged))
    if kind not in KINDS:
        raise UsageError(f"GGUF type '{kind}' is not supported ({', '.join(KINDS)}); k-quants such as q4_k_m need "
                         "llama.cpp's llama-quantize run on the f16 file")
    n_layer, n_head, n_kv = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name(merged.parent.parent.name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n_layer)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    rope = cfg.get("rope_parameters") or {}
    w.add_rope_freq_base(float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))))
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                     "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[kind])
    _add_tokenizer(w, AutoTokenizer.from_pretrained(merged), merged, cfg["vocab_size"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    tensors: dict[str, Any] = {}
    for f in sorted(merged.glob("model*.safetensors")):
        tensors.update(load_file(f))
    for hf_name, data in tensors.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UsageError(f"no GGUF name for tensor {hf_name}")
        data = data.astype(np.float32)
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_kv)
        if data.ndim == 1:
            w.add_tensor(name, data)
        elif kind != "f16" and data.shape[-1] % 32 == 0:  # both block types hold 32 weights
            qtype = gguf.GGMLQuantizationType.Q8_0 if kind == "q8_0" else gguf.GGMLQuantizationType.Q4_0
            q = gguf.quants.quantize(data, qtype)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
        else:
            w.add_tensor(name, data.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def _add_tokenizer(w: Any, tok: Any, merged: Path, vocab_size: int) -> None:
    import gguf

    spec = json.loads((merged / "tokenizer.json").read_text())
    if spec.get("model", {}).get("type") != "BPE":
        raise UsageError("GGUF export here supports byte-level BPE tokenizers only")
    vocab = {v: k for k, v in tok.get_vocab().items()}
    special = set(tok.all_special_ids) | {t.id if hasattr(t, "id") else i for i, t in getattr(tok, "added_tokens_decoder", {}).items()}
    tokens = [vocab.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm" if "smollm" in str(tok.chat_template or "").lower() else "default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for setter, tid in ((w.add_bos_token_id, tok.bos_token_id), (w.add_eos_token_id, tok.eos_token_id),
                        (w.add_pad_token_id, tok.pad_token_id)):
        if tid is not None:
            setter(tid)
    w.add_add_bos_token(False)
    if tok.chat_template:
        w.add_chat_template(tok.chat_template)
