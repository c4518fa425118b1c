"""`evalsuite train CONFIG.yaml`: parse, validate, pick (or resume) the run directory, run the recipe.

Only stdlib at module top: the CLI imports this to build its parser, and torch must not load then.
Re-running the same config resumes its run directory from the last checkpoint (the run's identity
is the config's fingerprint); `--fresh` starts over.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path


def configure_train(parser: argparse.ArgumentParser) -> None:
    parser.description = "LoRA/full SFT that saves, validates and scores a checkpoint every N steps."
    parser.add_argument("config", nargs="?", help="training config (YAML); `--explain` lists every key")
    parser.add_argument("--explain", action="store_true", help="print every config key with its default and meaning")
    parser.add_argument("--fresh", action="store_true", help="discard an existing run directory instead of resuming it")
    parser.add_argument("--max-steps", type=int, help="override training.max_steps")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--run-name", help="override run_name")
    parser.add_argument("--export", choices=["merged", "f16", "q8_0", "q4_0"], action="append", default=[],
                        help="export the best checkpoint after training (merged safetensors, or a GGUF file); repeatable")


def run_train(args: argparse.Namespace) -> int:
    from evalsuite.trainers import config as config_mod

    from evalsuite.errors import UsageError

    if args.explain:
        print(config_mod.explain())
        return 0
    if not args.config:
        raise UsageError("give a training config: evalsuite train CONFIG.yaml (see `evalsuite train --explain`)")
    cfg = config_mod.load(args.config)
    if args.max_steps:
        cfg.training.max_steps = args.max_steps
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.run_name:
        cfg.run_name = args.run_name
    for fmt in args.export:
        if fmt == "merged":
            cfg.export.merged = True
        else:
            cfg.export.gguf.append(fmt)
    from evalsuite.trainers import recipe, report

    from evalsuite.progress import console

    recipe.preflight(cfg)
    run_dir = prepare_run_dir(cfg, args.fresh)

    results = recipe.run(cfg, run_dir)
    if results:
        console.print(report.table(results, run_dir))
        best = results.training.best if results.training else None
        if best:
            value = "-" if best.value is None else f"{best.value:.4f}"
            console.print(f"best checkpoint: [bold]{run_dir / str(best.checkpoint)}[/bold] ({best.metric} = {value})")
        console.print(f"run directory: {run_dir}")
    return 0


def prepare_run_dir(cfg: object, fresh: bool) -> Path:
    """The run directory: new, or an earlier one of the same config to resume."""
    from evalsuite.errors import UsageError

    fp = cfg.fingerprint()  # type: ignore[attr-defined]
    name = cfg.run_name or f"train-{_slug(cfg.model)}-{fp[:8]}"  # type: ignore[attr-defined]
    run_dir = Path(cfg.output_dir).expanduser() / name  # type: ignore[attr-defined]
    marker = run_dir / "train_config.json"
    if run_dir.exists() and fresh:
        shutil.rmtree(run_dir)
    if marker.is_file():
        earlier = json.loads(marker.read_text())
        if earlier.get("fingerprint") != fp:
            raise UsageError(f"{run_dir} holds a run of a different config (model, data or training changed): "
                             "pass --fresh to replace it or --run-name to start another")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"{run_dir} exists and is not a training run: pick another --run-name or --output-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": fp, "config": cfg.model_dump()}, indent=2))  # type: ignore[attr-defined]
    return run_dir


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).name or text).strip("-")[:40]
