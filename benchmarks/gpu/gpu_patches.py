"""Run the CPU-oriented benchmarks in benchmarks/ on a CUDA device, unchanged but for device placement.

    python benchmarks/gpu/gpu_patches.py hf_vs_lmeval [its args]   # bench_hf_vs_lmeval.py on CUDA
    python benchmarks/gpu/gpu_patches.py train_vs_trl [its args]   # bench_train_vs_trl.py on CUDA

Both scripts hard-code CPU tensors (`bare_forward`, `_val_loss`) or `use_cpu=True` (TRL); this
wrapper swaps those pieces for device-aware ones and otherwise runs the scripts' own `main`. TRL
gets bf16 autocast like evalsuite's trainer (precision auto = bf16 on a bf16-capable GPU), and each
trainer's peak CUDA memory is added to its result.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def bare_forward(model, tok, contexts: list[str], batch_size: int) -> float:
    """bench_hf_vs_lmeval.bare_forward with the tensors on the model's device (and a sync)."""
    import torch

    dev = next(model.parameters()).device
    encoded = sorted((tok(c)["input_ids"] for c in contexts), key=len, reverse=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(encoded), batch_size):
            batch = encoded[i : i + batch_size]
            width = len(batch[0])
            ids = torch.tensor([b + [tok.pad_token_id] * (width - len(b)) for b in batch], device=dev)
            mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in batch], device=dev)
            model(input_ids=ids, attention_mask=mask)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def hf_vs_lmeval(argv: list[str]) -> None:
    mod = _load("bench_hf_vs_lmeval")
    mod.bare_forward = bare_forward
    sys.argv = ["bench_hf_vs_lmeval.py", *argv]
    mod.main()


def train_vs_trl(argv: list[str]) -> None:
    mod = _load("bench_train_vs_trl")
    if "--worker" not in argv:  # the parent: re-run this wrapper (not the original file) as each worker
        import subprocess

        real_run = subprocess.run
        orig = str(BENCH / "bench_train_vs_trl.py")
        subprocess.run = lambda cmd, **kw: real_run([cmd[0], __file__, "train_vs_trl", *cmd[2:]] if cmd[1] == orig else cmd, **kw)
        sys.argv = ["bench_train_vs_trl.py", *argv]
        mod.main()
        return
    import torch
    import trl

    def val_loss(model, tokenizer, val):
        from evalsuite.trainers import packing
        from evalsuite.trainers.recipe import token_loss_sum

        dev = next(model.parameters()).device
        model.eval()
        total = n = 0.0
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            for conv in val:
                ids, trained = packing.tokenize(tokenizer, conv, tokenizer.chat_template, add_bos=False)
                ex = packing.make_example(ids, trained, mod.MAX_LEN, "truncate")
                if ex:
                    total += token_loss_sum(model, packing.collate([[ex]], tokenizer.pad_token_id), dev).item()
                    n += ex.n_targets
        return total / n

    real_cfg = trl.SFTConfig

    def sft_config(*a, **kw):
        kw.update(use_cpu=False, bf16=torch.cuda.is_bf16_supported())
        return real_cfg(*a, **kw)

    mod._val_loss = val_loss
    trl.SFTConfig = sft_config
    out = Path(argv[argv.index("--out") + 1])
    sys.argv = ["bench_train_vs_trl.py", *argv]
    mod.main()
    res = json.loads(out.read_text())
    res["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None
    res["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    out.write_text(json.dumps(res))


if __name__ == "__main__":
    {"hf_vs_lmeval": hf_vs_lmeval, "train_vs_trl": train_vs_trl}[sys.argv[1]](sys.argv[2:])
