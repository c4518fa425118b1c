"""`evalsuite data ...`: build instruction data (template, self-instruct, filter, decontam, mix).

Every command writes JSONL in a layout `evalsuite train` reads (alpaca or messages) with per-row
provenance, plus a JSON report next to it (`OUT.report.json`). Model calls go through the
evalsuite call cache, so an interrupted generation re-run with the same arguments resumes.
Only stdlib at import time: the main CLI imports this module to build its parser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from evalsuite.argtypes import positive


def configure_data(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    t = sub.add_parser("template", help="expand slot templates from a YAML file into instructions")
    t.add_argument("spec", help="YAML file of templates and slot values (see examples/templates.yaml)")
    t.add_argument("--seed", type=int, help="sampling seed (default: the file's seed, else 0)")
    _add_model(t, required=False, help_text="answer the instructions with this model (optional)")
    _add_out(t)

    s = sub.add_parser("self-instruct", help="grow instructions from seed tasks with a model, then answer them")
    s.add_argument("--seeds", help="seed tasks JSONL (default: DATA_DIR/self_instruct/seed_tasks.jsonl)")
    s.add_argument("--data-dir", help="data tree laid out like shared/data (or EVALSUITE_DATA_DIR)")
    _add_model(s, required=True, help_text="generator model (any evalsuite --model spec)")
    s.add_argument("--response-model", help="answer with this model instead of the generator")
    s.add_argument("--num-instructions", type=positive, default=100, help="new instructions wanted (default 100)")
    s.add_argument("--batch", type=positive, default=4, help="prompts per round (default 4)")
    s.add_argument("--temperature", type=float, default=0.7)
    s.add_argument("--top-p", type=float, default=0.5)
    s.add_argument("--max-tokens", type=positive, default=512, help="tokens per instruction-generation call")
    s.add_argument("--response-tokens", type=positive, default=512, help="tokens per response")
    s.add_argument("--max-rounds", type=positive, default=100)
    s.add_argument("--rouge-threshold", type=float, default=0.7, help="reject ROUGE-L >= this vs the pool (0.7)")
    s.add_argument("--seed", type=int, default=0)
    _add_out(s)

    f = sub.add_parser("filter", help="quality filters: length, blocklist, ROUGE-L novelty, dedup, judge")
    f.add_argument("input", help="JSONL/JSON rows (alpaca, messages, or self-instruct seed format)")
    f.add_argument("--on", choices=["prompt", "all"], default="prompt", help="compare the prompt (default) or all text")
    f.add_argument("--min-words", type=int, default=3)
    f.add_argument("--max-words", type=positive, default=150)
    f.add_argument("--blocklist", help="comma-separated keywords (default: Self-Instruct's list); '' disables")
    f.add_argument("--rouge-threshold", type=float, default=0.7, help="reject ROUGE-L >= this; 0 disables")
    f.add_argument("--rouge-pool", help="JSONL of existing instructions the new ones must differ from")
    f.add_argument("--no-dedup", action="store_true", help="skip exact-duplicate removal")
    f.add_argument("--near-dup", type=float, default=0.7, help="MinHash Jaccard for near-duplicates; 0 disables")
    f.add_argument("--judge", help="judge model: keep rows it rates >= --min-judge-score (1-10)")
    f.add_argument("--judge-args", help="key=value[,...] for the judge's backend")
    f.add_argument("--min-judge-score", type=float, default=6.0)
    _add_cache(f)
    _add_out(f)

    d = sub.add_parser("decontam", help="13-gram overlap of training rows with eval tasks; report, optionally drop")
    d.add_argument("input", help="training rows (JSONL/JSON)")
    d.add_argument("--tasks", default="all",
                   help="comma-separated eval task names, or 'all' (default): every registered task whose data "
                        "loads offline (from the data dir); the others are listed as skipped")
    d.add_argument("--data-dir", help="data tree laid out like shared/data (or EVALSUITE_DATA_DIR)")
    d.add_argument("--n", type=positive, default=13, help="n-gram size (13, as lm-eval)")
    d.add_argument("--drop", action="store_true", help="write the rows without the contaminated ones to --out")
    d.add_argument("--fail", action="store_true", help="exit 1 when anything is contaminated (for CI)")
    d.add_argument("--out", help="output JSONL (with --drop)")
    d.add_argument("--format", choices=["alpaca", "messages"], default="alpaca")
    d.add_argument("--report", help="report JSON (default: INPUT.decontam.json, or OUT.report.json)")

    m = sub.add_parser("mix", help="build a weighted mixture of several sources; report realised shares")
    m.add_argument("--source", action="append", default=[], metavar="[NAME=]PATH[:WEIGHT]", help="repeatable")
    m.add_argument("--total", type=positive, help="rows in the mixture (default: the most without upsampling)")
    m.add_argument("--replace", action="store_true", help="upsample sources smaller than their share")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--tokenizer", help="count tokens with this tokenizer (model alias/folder); without it the "
                        "report counts whitespace words and labels them 'words'")
    _add_out(m)


def _add_model(p: argparse.ArgumentParser, required: bool, help_text: str) -> None:
    p.add_argument("--model", required=required, help=help_text)
    p.add_argument("--model-args", help="key=value[,...] for the model's backend")
    _add_cache(p)


def _add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-path", help="SQLite call cache (default: user cache dir, or EVALSUITE_CACHE_DIR)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the call cache (not resumable)")


def _add_out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output JSONL")
    p.add_argument("--format", choices=["alpaca", "messages"], default="alpaca", help="row layout (default alpaca)")
    p.add_argument("--report", help="report JSON (default: OUT.report.json)")


def run_data(args: argparse.Namespace) -> int:
    command = {"template": _template, "self-instruct": _self_instruct, "filter": _filter,
               "decontam": _decontam, "mix": _mix}[args.data_command]
    return command(args)


# ---------------------------------------------------------------------------- helpers
def _client(spec: str, model_args: str | None, args: argparse.Namespace) -> Any:
    from evalsuite.cache import CallCache, NullCache
    from evalsuite.cli import parse_kv
    from evalsuite.runner import ModelClient

    cache = NullCache() if args.no_cache else CallCache(Path(args.cache_path) if args.cache_path else None)
    return ModelClient(spec, parse_kv(model_args, "--model-args"), cache)


def _finish(args: argparse.Namespace, rows: list[dict[str, Any]], report: dict[str, Any], lines: list[str]) -> int:
    from evalsuite.datagen.rows import write_json, write_rows

    n = write_rows(args.out, rows, args.format)
    report_path = args.report or f"{args.out}.report.json"
    write_json(report_path, report)
    for line in lines:
        print(line)
    print(f"wrote {n} rows to {args.out} ({args.format}); report: {report_path}")
    return 0


def _template(args: argparse.Namespace) -> int:
    from evalsuite.datagen import templates

    rows = templates.expand(templates.load_spec(args.spec), seed=args.seed, source=f"template:{Path(args.spec).name}")
    report: dict[str, Any] = {"command": "template", "spec": args.spec, "instructions": len(rows)}
    if args.model:
        from evalsuite.datagen.self_instruct import respond

        client = _client(args.model, args.model_args, args)
        try:
            rows = respond(rows, client)
        finally:
            client.close()
        report["responses"] = len(rows)
    lines = [f"{report['instructions']} instructions from {args.spec}"]
    if not args.model:
        lines.append("note: rows have no output yet; pass --model to answer them before training on them")
    return _finish(args, rows, report, lines)


def _self_instruct(args: argparse.Namespace) -> int:
    from evalsuite.datagen import self_instruct as si
    from evalsuite.task import TaskContext

    seeds_path = args.seeds or TaskContext.from_env(args.data_dir).data_path("self_instruct", "seed_tasks.jsonl")
    cfg = si.SelfInstructConfig(num_instructions=args.num_instructions, batch=args.batch, temperature=args.temperature,
                                top_p=args.top_p, max_tokens=args.max_tokens, rouge_threshold=args.rouge_threshold,
                                max_rounds=args.max_rounds, seed=args.seed)
    client = _client(args.model, args.model_args, args)
    responder = _client(args.response_model, None, args) if args.response_model else None
    try:
        rows, report = si.self_instruct(client, si.load_seeds(seeds_path), cfg, responder, args.response_tokens)
    finally:
        client.close()
        if responder:
            responder.close()
    report = {"command": "self-instruct", "seeds": str(seeds_path), "config": vars(cfg), **report}
    stats = report["instructions"]
    line = (f"{report['rounds']} rounds: {stats['generated']} generated, kept {stats['kept']} "
            f"(rejected: length {stats['length']}, blocklist {stats['blocklist']}, format {stats['format']}, "
            f"ROUGE-L {stats['rouge']})")
    return _finish(args, rows, report, [line])


def _filter(args: argparse.Namespace) -> int:
    from evalsuite.datagen import filters as F
    from evalsuite.datagen.rows import instruction_of, read_rows

    rows = read_rows(args.input)
    chain: list[tuple[str, Any]] = [("length", F.length(args.min_words, args.max_words, args.on))]
    words = F.DEFAULT_BLOCKLIST if args.blocklist is None else [w.strip() for w in args.blocklist.split(",") if w.strip()]
    if words:
        chain.append(("blocklist", F.blocklist(words, args.on)))
    if not args.no_dedup:
        chain.append(("exact_dedup", F.exact_dedup(args.on)))
    if args.near_dup > 0:
        chain.append(("near_dedup", F.near_dedup(args.near_dup, on=args.on)))
    if args.rouge_threshold > 0:
        pool = [instruction_of(r) for r in read_rows(args.rouge_pool)] if args.rouge_pool else []
        chain.append((f"rouge_l<{args.rouge_threshold}", F.rouge(args.rouge_threshold, pool, args.on)))
    client = None
    if args.judge:
        client = _client(args.judge, args.judge_args, args)
        chain.append(("judge", F.judge(client, args.min_judge_score)))
    try:
        kept, report = F.run_filters(rows, chain)
    finally:
        if client:
            client.close()
    lines = [f"{report['input_rows']} rows in, {report['output_rows']} kept"]
    lines += [f"  {f['name']}: removed {f['removed']} of {f['in']}" for f in report["filters"]]
    return _finish(args, kept, {"command": "filter", "input": args.input, **report}, lines)


def _decontam(args: argparse.Namespace) -> int:
    from evalsuite.datagen import decontam
    from evalsuite.datagen.rows import (
        read_rows,
        with_provenance,
        write_json,
        write_rows,
    )
    from evalsuite.errors import UsageError
    from evalsuite.task import TaskContext

    if args.drop and not args.out:
        raise UsageError("--drop writes the clean rows to --out FILE: pass --out")
    ctx = TaskContext.from_env(args.data_dir)
    rows = read_rows(args.input)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    every = tasks == ["all"]
    if every and ctx.data_dir is None:
        raise UsageError("--tasks all scans the tasks whose data is in the data dir: pass --data-dir DIR "
                         "(or set EVALSUITE_DATA_DIR), or name the tasks with --tasks")
    if not tasks or (not every and "all" in tasks):
        raise UsageError(f"--tasks takes 'all' or comma-separated task names, got '{args.tasks}'")
    names = decontam.all_task_names() if every else tasks
    report = decontam.decontaminate(rows, names, ctx, n=args.n, skip_unavailable=every)
    if not report["tasks"]:
        raise UsageError(f"no eval task's data loads from {ctx.data_dir}; skipped: "
                         + "; ".join(f"{t} ({why})" for t, why in report["skipped_tasks"].items()))
    report_path = args.report or (f"{args.out}.report.json" if args.out else f"{args.input}.decontam.json")
    write_json(report_path, report)
    print("\n".join(decontam.summary_lines(report)))
    if args.drop:
        scanned = ",".join(report["tasks"])
        clean = [with_provenance(r, filters=[f"decontam:{scanned}"]) for r in decontam.drop_contaminated(rows, report)]
        print(f"wrote {write_rows(args.out, clean, args.format)} clean rows to {args.out}")
    print(f"report: {report_path}")
    return 1 if args.fail and report["contaminated_rows"] else 0


def _mix(args: argparse.Namespace) -> int:
    from evalsuite.datagen import mixtures

    sources = [mixtures.parse_source(s) for s in args.source]
    counter, unit = (mixtures.hf_token_counter(args.tokenizer), "tokens") if args.tokenizer else (mixtures.word_count, "words")
    rows, report = mixtures.build_mixture(sources, args.total, args.seed, args.replace, counter, unit)
    return _finish(args, rows, {"command": "mix", **report}, mixtures.report_lines(report))


if __name__ == "__main__":  # pragma: no cover - `python -m evalsuite.datagen.cli data ...` for debugging
    p = argparse.ArgumentParser(prog="evalsuite data")
    configure_data(p)
    sys.exit(run_data(p.parse_args()))
