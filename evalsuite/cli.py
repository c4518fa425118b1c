"""The `evalsuite` command.

Start-up stays fast (no torch, no pandas): every command imports what it needs when it runs.
Commands owned by plugin folders (compare, gate, train, ...) are delegated: for command NAME the
module in `DELEGATED` provides `configure_NAME(parser)` and `run_NAME(args) -> int`.
User errors print one line and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Any

from evalsuite.argtypes import positive, whole_number
from evalsuite.cpu_defaults import CPU_MAX_TOKENS

DELEGATED = {
    "compare": ("evalsuite.reports.cli", "compare runs: score table with CIs, paired tests, HTML report"),
    "gate": ("evalsuite.reports.cli", "CI regression gate: exit 1 when the candidate regressed"),
    "train": ("evalsuite.trainers.cli", "LoRA SFT training that scores its checkpoints"),
    "data": ("evalsuite.datagen.cli", "build instruction data: templates, self-instruct, filters, decontamination"),
    "arena": ("evalsuite.judges.cli", "pairwise arena over several runs: judge every pair, Bradley-Terry ratings"),
    "annotate": ("evalsuite.annotate.cli", "human evaluation in the browser: pairwise, Likert, ranking; export; import"),
    "cache": ("evalsuite.cache", "check or clear the model-call cache"),
    "report": ("evalsuite.reports.cli", "self-contained HTML report of one run, several runs or a training run"),
}


def parse_kv(text: str | None, flag: str) -> dict[str, Any]:
    """`a=1,b=x,c=true` -> {"a": 1, "b": "x", "c": True}."""
    from evalsuite.errors import UsageError

    out: dict[str, Any] = {}
    for part in filter(None, (text or "").split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"malformed {flag} '{text}': expected key=value[,key=value...]")
        out[key.strip()] = _typed(value.strip())
    return out


def _typed(value: str) -> Any:
    from evalsuite.taskargs import typed

    return typed(value)


def _limit(text: str) -> int:
    return whole_number(text, f"--limit takes a positive whole number of samples, got '{text}'")


def _samples_per_task(text: str) -> int:
    return whole_number(text, f"--samples-per-task takes a whole number >= 1 (samples per prompt), got '{text}'")


def _temperature(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        t = -1.0
    if not t >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"--temperature takes a number >= 0 (0 is greedy), got '{text}'")
    return t


def _judge_samples(text: str) -> int:
    return whole_number(text, f"--judge-samples takes a whole number >= 1, got '{text}'")


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text}")
    return value


def _cpu_max_tokens(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    return whole_number(text, f"expected a whole number of tokens >= 1 or 'none', got {text}")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", required=True, help="comma-separated task names (`evalsuite list tasks`)")
    p.add_argument("--task-args", help="TASK:key=value[,key=value,TASK2:key=value...] task arguments "
                   "(a bare key=value only when one task runs)")
    p.add_argument("-T", dest="task_arg", action="append", default=[], metavar="TASK.KEY=VALUE",
                   help="one task argument, e.g. -T mmlu.num_fewshot=0 (repeatable)")
    p.add_argument("--limit", type=_limit, help="evaluate only the first N samples of each task")
    p.add_argument("--data-dir", help="local data tree laid out like shared/data (or EVALSUITE_DATA_DIR)")
    p.add_argument("--output-dir", default="runs", help="where run directories go (default: runs/)")
    p.add_argument("--allow-code-execution", action="store_true", help="allow code tasks to run model code in the sandbox")
    p.add_argument("--seed", type=int, help="seed of the tasks that sample or draw few-shot examples (default 1234)")
    p.add_argument("--judge", help="judge model for LLM-as-judge tasks (any --model spec, e.g. openai:gpt-4o)")
    p.add_argument("--judge-args", help="key=value[,...] for the judge's backend")
    p.add_argument("--judge-samples", type=_judge_samples, metavar="K",
                   help="median of K judgments per item for judged tasks (like --task-args judge_samples=K)")
    p.add_argument("--max-judge-errors", type=_share, default=0.2, metavar="SHARE",
                   help="fail (exit 1, run kept) when a task's judge_error rate is above this (default 0.2)")
    p.add_argument("--include-path", help="folder of your own lm-eval YAML tasks (for lm_eval:NAME tasks)")
    p.add_argument("--export", help="extra result formats to write into the run dir, e.g. lm-eval")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the model-call cache")
    p.add_argument("--cache-path", help="SQLite cache file (default: user cache dir, or EVALSUITE_CACHE_DIR)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evalsuite", description="Evaluate language models; train and gate them.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="evaluate a model on tasks")
    run.add_argument("--model", required=True, help="smollm2-135m, a folder, a .gguf file, a hub id, vllm:PATH, openai:NAME")
    run.add_argument("--backend", help="backend name (default: from the --model prefix, else hf)")
    run.add_argument("--model-args", help="key=value[,...] for the backend, e.g. dtype=bfloat16,batch_size=8")
    run.add_argument("--batch-size", help="'auto' (default) or a number")
    run.add_argument("--base-url", help="OpenAI-compatible server URL (openai backend)")
    run.add_argument("--max-concurrency", type=positive, help="parallel requests in flight (openai backend)")
    run.add_argument("--samples-per-task", type=_samples_per_task, default=1,
                     help="samples per prompt (pass@k, majority vote) for the tasks that sample")
    run.add_argument("--temperature", type=_temperature, help="sampling temperature (>= 0) for the tasks that sample")
    run.add_argument("--cpu-max-tokens", type=_cpu_max_tokens, default=CPU_MAX_TOKENS, metavar="N|none",
                     help=f"on a CPU model, cap each task's own max_tokens at N (default {CPU_MAX_TOKENS}; "
                     "none keeps the tasks' own; -T TASK.max_tokens=N always wins)")
    _add_common(run)

    score = sub.add_parser("score", help="score outputs made elsewhere, or re-score a run dir (no model)")
    score.add_argument("--outputs", help="JSONL: {id, output} lines or the task's native format")
    score.add_argument("--run-dir", help="an earlier run directory to re-score")
    score.add_argument("--allow-missing", action="store_true",
                       help="score the samples that have outputs; record the others as missing (the gate sees them)")
    score.add_argument("--samples-per-task", type=_samples_per_task, default=1,
                       help="outputs per sample in the outputs file (pass@k, majority vote), for the tasks that sample")
    _add_common(score)

    lst = sub.add_parser("list", help="list plugins: tasks, scorers, backends, judges, reporters")
    lst.add_argument("kind", nargs="?", choices=["tasks", "backends", "scorers", "judges", "reporters"])
    lst.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    for name, (module, help_text) in DELEGATED.items():
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _tasks(args: argparse.Namespace) -> list[str]:
    from evalsuite.errors import UsageError

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.seed is not None:
        from evalsuite import registry, taskargs

        factories = {t: registry.get("tasks", t.partition(":")[0]) for t in tasks}
        if not taskargs.uses_seed(factories):
            raise UsageError(f"--seed {args.seed} would change nothing: none of the tasks {', '.join(tasks)} samples "
                             "or draws examples at random; drop --seed")
    return tasks


def _config(args: argparse.Namespace) -> Any:
    from evalsuite import taskargs
    from evalsuite.runner import RunConfig

    model_args = parse_kv(getattr(args, "model_args", None), "--model-args")
    if getattr(args, "batch_size", None):
        model_args["batch_size"] = _typed(args.batch_size)
    if getattr(args, "base_url", None):
        model_args["base_url"] = args.base_url
    if getattr(args, "max_concurrency", None):
        model_args["max_concurrency"] = args.max_concurrency
    options = {"include_path": args.include_path} if args.include_path else {}
    if getattr(args, "judge_samples", None):
        options["judge_samples"] = args.judge_samples  # read by judged tasks not given judge_samples themselves
    tasks = _tasks(args)
    return RunConfig(
        tasks=tasks,
        model=getattr(args, "model", None),
        backend=getattr(args, "backend", None),
        model_args=model_args,
        task_args=taskargs.parse(args.task_args, args.task_arg, tasks),
        limit=args.limit,
        data_dir=args.data_dir,
        output_dir=args.output_dir,
        use_cache=not getattr(args, "no_cache", False),
        cache_path=getattr(args, "cache_path", None),
        seed=taskargs.DEFAULT_SEED if args.seed is None else args.seed,
        samples_per_task=getattr(args, "samples_per_task", 1),
        temperature=getattr(args, "temperature", None),
        allow_code_execution=args.allow_code_execution,
        judge=args.judge,
        judge_args=parse_kv(args.judge_args, "--judge-args"),
        options=options,
        allow_missing=getattr(args, "allow_missing", False),
        max_judge_errors=args.max_judge_errors,
        export=[e.strip() for e in (args.export or "").split(",") if e.strip()],
        cpu_max_tokens=getattr(args, "cpu_max_tokens", CPU_MAX_TOKENS),
    )


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from evalsuite import registry

    table = Table("kind", "name", "from", "description", title="evalsuite plugins", title_justify="left")
    failed = []
    for kind in [args.kind] if args.kind else list(registry.KINDS):
        for info in registry.describe(kind):
            desc = f"[red]error: {escape(info.error)}[/red]" if info.error else escape(info.description)
            table.add_row(kind[:-1], info.name, info.origin, desc)
            if info.error:
                failed.append(info)
    Console().print(table)
    for info in failed:  # also on stderr, one line each, for logs and scripts
        print(f"evalsuite: error: {info.error}", file=sys.stderr)
    return 2 if failed else 0


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "list":
        return cmd_list(args)
    if args.command in DELEGATED:
        module_name, _ = DELEGATED[args.command]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            from evalsuite.errors import UsageError

            raise UsageError(f"'{args.command}' is not available in this install ({exc.name} missing)") from exc
        sub = argparse.ArgumentParser(prog=f"evalsuite {args.command}")
        getattr(module, f"configure_{args.command}")(sub)
        return int(getattr(module, f"run_{args.command}")(sub.parse_args(args.rest)) or 0)
    from evalsuite import runner

    if args.command == "run":
        runner.run_eval(_config(args))
    else:
        runner.score_outputs(_config(args), outputs=args.outputs, run_dir=args.run_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if argv and argv[0] in DELEGATED:  # argparse REMAINDER drops a leading --option: hand everything over
        args = argparse.Namespace(command=argv[0], rest=list(argv[1:]), debug="--debug" in argv[1:])
    else:
        args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False) or os.environ.get("EVALSUITE_DEBUG") == "1"
    from evalsuite.errors import EvalsuiteError

    t0 = time.perf_counter()
    try:
        return _dispatch(args, argv)
    except EvalsuiteError as exc:
        if debug:
            raise
        print(f"evalsuite: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("evalsuite: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
        if debug:
            raise
        print(f"evalsuite: internal error after {time.perf_counter() - t0:.1f}s: {type(exc).__name__}: {exc} "
              "(re-run with --debug for the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
