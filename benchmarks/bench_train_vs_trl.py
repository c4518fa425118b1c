"""`evalsuite train` vs TRL's SFTTrainer: tokens/s, peak RSS, final validation loss.

Same model (SmolLM2-135M-Instruct), LoRA config (r=16, alpha=32, all-linear), data (Self-Instruct
user-oriented tasks, same held-out validation set), max length 256, effective batch 2 x 2, lr,
schedule, steps and gradient checkpointing (TRL's SFTConfig turns it on by default; both sides
get `--grad-ckpt`, off by default as in `evalsuite train`). Each trainer runs in its own process (peak RSS is per process) with the same
torch thread count (`--threads`, default 1), one after the other, or side by side with `--parallel`
(on a CPU shared with other work, both sides then see the same load). tokens/s counts
real (non-padding) tokens trained per second of the training loop (model loading excluded), and per
CPU-second of the trainer process (less swayed by other work on a shared machine). Both
adapters are validated by the same function: mean cross-entropy over assistant tokens.
`--device cuda` trains both on the GPU with the same precision: bf16 autocast where the GPU supports
it (evalsuite's `precision: auto`; TRL's `bf16=True`), and adds each trainer's peak CUDA memory.

    python benchmarks/bench_train_vs_trl.py --steps 8 --threads 1 --trainers evalsuite,trl,trl-packing [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _device import add_device_flag, check_device, device_label

LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
LR, MAX_LEN, MICRO, ACCUM, SEED = 3e-4, 256, 2, 2, 1234


def _data(data_dir: Path) -> tuple[list, list]:
    from evalsuite.trainers import data

    spec_path = data_dir / "self_instruct" / "user_oriented_instructions.jsonl"
    convs = [c for r in data.read_records(str(spec_path)) for c in data.to_conversations(r)]
    return data.split(convs, 0.1, 24, SEED)


def _val_loss(model, tokenizer, val: list) -> float:
    """Assistant-token cross-entropy of the validation conversations, one function for both trainers."""
    import torch
    from evalsuite.trainers import packing
    from evalsuite.trainers.recipe import token_loss_sum

    dev = next(model.parameters()).device
    model.eval()
    total = n = 0.0
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=_bf16(dev.type)):
        for conv in val:
            ids, trained = packing.tokenize(tokenizer, conv, tokenizer.chat_template, add_bos=False)
            ex = packing.make_example(ids, trained, MAX_LEN, "truncate")
            if ex:
                total += token_loss_sum(model, packing.collate([[ex]], tokenizer.pad_token_id), dev).item()
                n += ex.n_targets
    return total / n


def _bf16(device: str) -> bool:
    """The precision both trainers get: bf16 autocast on a GPU that supports it, else fp32."""
    import torch

    return device == "cuda" and torch.cuda.is_bf16_supported()


def run_evalsuite(model_dir: str, data_dir: Path, steps: int, tmp: Path, grad_ckpt: bool, device: str) -> dict:
    from evalsuite.trainers import config, recipe

    train, val = _data(data_dir)
    (tmp / "train.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in train))
    cfg = config.parse({"model": model_dir, "seed": SEED,
                        "data": {"datasets": [{"path": str(tmp / "train.jsonl")}], "val_fraction": 0.0, "max_seq_len": MAX_LEN},
                        "training": {"max_steps": steps, "micro_batch_size": MICRO, "grad_accum": ACCUM, "lr": LR,
                                     "warmup_ratio": 0.1, "gradient_checkpointing": grad_ckpt, "device": device},
                        "lora": {**LORA, "target_modules": "all-linear"}, "eval": {"every": 0}})
    run = tmp / "run"
    run.mkdir()
    r = recipe.Recipe(cfg, run)
    r.setup()
    t0, c0 = time.perf_counter(), time.process_time()
    r.train()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"tokens": r.tokens_seen, "wall_s": wall, "cpu_s": cpu, "val_loss": _val_loss(r.model, r.tokenizer, val)}


def run_trl(model_dir: str, data_dir: Path, steps: int, tmp: Path, packing: bool, grad_ckpt: bool, device: str) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    train, val = _data(data_dir)
    # prompt/completion rows: TRL masks the prompt (completion-only loss), i.e. assistant-only here
    rows = [{"prompt": c[:-1], "completion": c[-1:]} for c in train]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = SFTConfig(output_dir=str(tmp / "trl"), max_steps=steps, per_device_train_batch_size=MICRO,
                     gradient_accumulation_steps=ACCUM, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0.1,  # a ratio in transformers 5
                     max_length=MAX_LEN, packing=packing, seed=SEED, logging_steps=1, save_strategy="no", report_to=[],
                     use_cpu=device == "cpu", bf16=_bf16(device), include_num_input_tokens_seen="non_padding",
                     dataloader_num_workers=0,
                     gradient_checkpointing=grad_ckpt)
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tok,
                         peft_config=lora)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"tokens": int(trainer.state.num_input_tokens_seen), "wall_s": wall, "cpu_s": cpu,
            "val_loss": _val_loss(trainer.model, tok, val)}


def worker(which: str, steps: int, data_dir: Path, out: Path, threads: int, grad_ckpt: bool, device: str) -> None:
    import tempfile

    import torch

    torch.set_num_threads(threads)
    from evalsuite.backends import models

    model_dir = models.resolve("smollm2-135m").path
    with tempfile.TemporaryDirectory() as tmp:
        if which == "evalsuite":
            res = run_evalsuite(model_dir, data_dir, steps, Path(tmp), grad_ckpt, device)
        else:
            res = run_trl(model_dir, data_dir, steps, Path(tmp), which == "trl-packing", grad_ckpt, device)
    res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    res["device"] = device_label(device)
    if device == "cuda":
        res["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1e9
    out.write_text(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--data-dir", default=os.environ.get("EVALSUITE_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--trainers", default="evalsuite,trl", help="comma list of evalsuite, trl, trl-packing")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, the same for every trainer")
    ap.add_argument("--parallel", action="store_true", help="run the trainers side by side (same machine load)")
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing on both sides (TRL's default)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    add_device_flag(ap)
    a = ap.parse_args()
    check_device(a.device)
    if a.worker:
        worker(a.worker, a.steps, Path(a.data_dir), Path(a.out), a.threads, a.grad_ckpt, a.device)
        return
    results, procs, outs = {}, [], {}
    for which in a.trainers.split(","):
        outs[which] = out = Path(f"/tmp/bench_train_{which}.json")
        out.unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--worker", which, "--steps", str(a.steps), "--data-dir", a.data_dir,
               "--out", str(out), "--threads", str(a.threads), "--device", a.device, *(["--grad-ckpt"] if a.grad_ckpt else [])]
        if a.parallel:
            procs.append(subprocess.Popen(cmd))
        else:
            subprocess.run(cmd, check=True)
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a trainer failed (see its output above)")
    for which, out in outs.items():
        results[which] = json.loads(out.read_text())
    print(f"\ndevice: {device_label(a.device)}, threads per trainer: {a.threads}, "
          f"{'side by side' if a.parallel else 'one after the other'}, steps: {a.steps}, "
          f"gradient checkpointing: {'on' if a.grad_ckpt else 'off'} (both)")
    print(f"{'trainer':<12} {'tokens':>8} {'wall s':>8} {'tok/s':>8} {'tok/CPU-s':>10} {'peak RSS GB':>12} {'val loss':>9}"
          + (f" {'peak CUDA GB':>13}" if a.device == "cuda" else ""))
    for name, r in results.items():
        r["tok_s"] = r["tokens"] / r["wall_s"]
        r["tok_cpu_s"] = r["tokens"] / r["cpu_s"]  # per CPU-second of the process: less swayed by a shared machine
        cuda = f" {r['peak_cuda_gb']:>13.2f}" if "peak_cuda_gb" in r else ""
        print(f"{name:<12} {r['tokens']:>8} {r['wall_s']:>8.1f} {r['tok_s']:>8.1f} {r['tok_cpu_s']:>10.1f} "
              f"{r['peak_rss_gb']:>12.2f} {r['val_loss']:>9.4f}{cuda}")
    for peer in ("trl", "trl-packing"):
        if "evalsuite" in results and peer in results:
            e, t = results["evalsuite"], results[peer]
            print(f"evalsuite / {peer} tokens/s: {e['tok_s'] / t['tok_s']:.2f}x (per CPU-s {e['tok_cpu_s'] / t['tok_cpu_s']:.2f}x)   peak RSS ratio "
                  f"{e['peak_rss_gb'] / t['peak_rss_gb']:.2f}   val loss {e['val_loss']:.4f} vs {t['val_loss']:.4f}")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
