"""Markdown summary of a training run directory: per-checkpoint table, best checkpoint, throughput.

    python benchmarks/gpu/summarize_train.py RUN_DIR
Reads only results.json and metrics.jsonl, so it also works on a run that was cut short.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(run_dir: Path) -> None:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip().startswith("{")]
    train = [r for r in rows if r.get("kind") == "train"]
    ckpts = {r["step"]: r for r in rows if r.get("kind") == "checkpoint"}  # the last row of a step wins
    for f in sorted((run_dir / "checkpoints").glob("step-*/eval.json")):  # scored, not yet collected (cut short)
        step = int(f.parent.name.removeprefix("step-"))
        if step not in ckpts:
            ckpts[step] = {"step": step, "scores": json.loads(f.read_text())["scores"]}
    metrics = sorted({m for r in ckpts.values() for m in (r.get("scores") or {})})
    res_path = run_dir / "results.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {}
    best = (results.get("training") or {}).get("best") or {}
    print(f"run: {run_dir.name}, status {results.get('status', '?')}, best by {best.get('metric', '-')}: "
          f"step {best.get('step', '-')} ({best.get('checkpoint', '-')})\n")
    print("| step | train loss | val loss | " + " | ".join(metrics) + " |")
    print("|---:|---:|---:|" + "---:|" * len(metrics))
    for step, r in sorted(ckpts.items()):
        cells = [r.get("train_loss"), r.get("val_loss")] + [(r.get("scores") or {}).get(m) for m in metrics]
        mark = " *" if step == best.get("step") else ""
        err = f" ({r['eval_error']})" if r.get("eval_error") else ""
        print(f"| {step}{mark} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in cells) + f" |{err}")
    if train:
        last = train[-1]
        print(f"\ntraining: {last['step']} steps, {last['tokens']} tokens in {last['train_s']:.1f} s "
              f"({last['tokens_per_s']:.0f} tokens/s, evaluation excluded)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
