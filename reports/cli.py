"""`evalsuite compare`, `evalsuite gate` and `evalsuite report` (delegated from evalsuite/cli.py).

Only the stdlib is imported at the top: the CLI imports this module to build its parser.
Exit codes of the gate: 0 pass, 1 regression found, 2 usage or input error (the main CLI turns a
`UsageError` into one line on stderr and exit 2). Exit 1 must mean "regression" and nothing else,
so the gate turns any unexpected exception into a one-line error with exit 2 as well.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalsuite.argtypes import positive

if TYPE_CHECKING:
    from evalsuite.reports.compare import Comparison
    from evalsuite.runner import RunConfig


def _tasks(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", help="compare only these tasks (comma-separated); default: all tasks")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare even when sample sets or contents, task versions, task configs (e.g. num_fewshot) "
                        "or task lists differ (said in the output); without it they are an error (exit 2)")
    p.add_argument("--n-boot", type=positive, default=10_000, help="paired bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--html", metavar="PATH", help="also write a self-contained HTML report (= --report html:PATH)")
    p.add_argument("--report", metavar="FORMAT:PATH", action="append", default=[],
                   help="write a report with a registered reporter (`evalsuite list reporters`), e.g. markdown:out.md; "
                        "repeatable")
    p.add_argument("--arena", metavar="RUN", action="append", default=[],
                   help="an `evalsuite arena` run directory whose ratings the HTML report shows (repeatable)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")


def _arena_runs(args: argparse.Namespace) -> list:
    from evalsuite.errors import UsageError
    from evalsuite.rundir import load_run

    runs = [load_run(p) for p in args.arena]
    for run in runs:
        if run.results.arena is None or not run.results.arena.ratings:
            raise UsageError(f"{run.path} has no arena ratings (make one with `evalsuite arena`)")
    return runs


# ---------------------------------------------------------------------------- compare
def configure_compare(p: argparse.ArgumentParser) -> None:
    p.description = ("Compare run directories: scores with 95% CIs, paired deltas and p-values vs the first run "
                     "(McNemar exact for 0/1 scores, paired bootstrap otherwise).")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run directories, the first is the baseline; TRAIN_RUN@step-N is one checkpoint of a training "
                        "run; a training run alone compares each scored checkpoint with the first")
    p.add_argument("--format", choices=["table", "markdown"], default="table", help="stdout format (default: table)")
    p.add_argument("--no-groups", action="store_true", help="leave out per-subtask rows")
    p.add_argument("--human", metavar="STORE", action="append", default=[],
                   help="an `evalsuite annotate` store (.sqlite) or its export run dir, made from these runs: show the "
                        "human win rates / Likert means / ranks, annotator agreement and judge-human agreement "
                        "(repeatable)")
    _common(p)


def _report_pairs(args: argparse.Namespace) -> list:
    """--report FORMAT:PATH and its spellings --html/--markdown/--junit PATH, checked before any work starts."""
    from evalsuite.reports.reporters import parse_specs

    specs = list(args.report)
    specs += [f"{fmt}:{path}" for fmt in ("html", "markdown", "junit") if (path := getattr(args, fmt, None))]
    return parse_specs(specs)


def run_compare(args: argparse.Namespace) -> int:
    from evalsuite.reports.compare import compare, load_runs
    from evalsuite.reports.reporters import write_reports

    reports = _report_pairs(args)
    comp = compare(load_runs(args.runs), tasks=_tasks(args.tasks), allow_mismatch=args.allow_mismatch,
                   n_boot=args.n_boot, seed=args.seed)
    if args.human:
        from evalsuite.reports.human import load_human

        comp.human = load_human(args.human, comp, _arena_runs(args), seed=args.seed)
    if args.format == "markdown":
        from evalsuite.reports.markdown import render_markdown

        print(render_markdown(comp, include_groups=not args.no_groups))
    else:
        from rich.markup import escape

        from evalsuite.reports.terminal import comparison_table

        console = _console()
        for w in comp.warnings:
            console.print(f"[bold yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
        console.print(comparison_table(comp, include_groups=not args.no_groups))
        from evalsuite.reports.behaviour import print_terminal

        print_terminal(console, comp)
        _print_decontamination(console, comp)
        if comp.human:
            from evalsuite.reports.human import text_lines

            for line in text_lines(comp.human):
                console.print(line, soft_wrap=True, highlight=False, markup=False)
    write_reports(reports, comp, None, html={"arena_runs": _arena_runs(args)})
    return 0


def _print_decontamination(console: Any, comp: Comparison) -> None:
    for label, lines in comp.decontamination.items():
        console.print(f"decontamination of {label}'s training data:", style="bold", highlight=False)
        for line in lines:
            console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)


# ---------------------------------------------------------------------------- gate
def _max_drop(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def configure_gate(p: argparse.ArgumentParser) -> None:
    p.description = ("Regression gate for CI: exit 0 pass, 1 regression, 2 usage/input error (also: runs whose "
                     "samples, task versions or task configs differ, unless --allow-mismatch). By default a metric "
                     "regresses when it drops by more than 1 point (0.01) of a [0, 1] metric, or 1% of the baseline "
                     "score of other metrics, AND the paired test is significant at 0.05.")
    p.add_argument("--baseline", required=True, metavar="RUN", help="baseline run directory")
    p.add_argument("--candidate", metavar="RUN", help="candidate run directory (or --run)")
    p.add_argument("--rules", metavar="YAML", help="gate rules file (see examples/gate.yaml)")
    p.add_argument("--markdown", metavar="PATH", help="write the Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    p.add_argument("--junit", metavar="PATH", help="write JUnit XML here (one test case per task/metric)")
    p.add_argument("--alpha", type=float, help="significance level (default 0.05; overrides the rules file's defaults)")
    p.add_argument("--max-drop", type=_max_drop,
                   help="allowed absolute drop, or 'auto' (the default: 0.01 of a [0, 1] metric, 1%% of the baseline "
                        "otherwise); overrides the rules file's defaults")
    run = p.add_argument_group("--run mode: evaluate the candidate model first, on the baseline's configuration")
    run.add_argument("--run", action="store_true", help="run the candidate's eval, then gate it")
    run.add_argument("--model", help="candidate model spec (as for `evalsuite run --model`)")
    run.add_argument("--backend", help="backend name (default: from the --model prefix)")
    run.add_argument("--model-args", help="key=value[,...] for the backend")
    run.add_argument("--data-dir",
                     help="data tree (default: the baseline's, if it exists here; else EVALSUITE_DATA_DIR)")
    run.add_argument("--judge", help="judge model for LLM-as-judge tasks (default: the baseline's judge)")
    run.add_argument("--judge-args", help="key=value[,...] for the judge's backend (default: the baseline's)")
    run.add_argument("--output-dir", default="runs", help="where the candidate run directory goes (default: runs/)")
    run.add_argument("--no-cache", action="store_true", help="do not use the model-call cache")
    _common(p)


def candidate_config(args: argparse.Namespace) -> RunConfig:
    """`--run`: the candidate's eval config: the baseline's tasks, limit, seed, task options, data and judge."""
    from evalsuite.cli import parse_kv
    from evalsuite.errors import UsageError
    from evalsuite.rundir import load_run
    from evalsuite.runner import RunConfig

    if not args.model:
        raise UsageError("gate --run needs --model: the candidate model to evaluate")
    if args.candidate:
        raise UsageError("pass either --candidate RUN or --run --model M, not both")
    base = load_run(args.baseline)
    cfg: dict[str, Any] = base.results.config
    data_dir = args.data_dir
    recorded = cfg.get("data_dir")
    if data_dir is None and recorded:
        if Path(recorded).is_dir():
            data_dir = recorded
        else:
            fallback = os.environ.get("EVALSUITE_DATA_DIR") or "the default data dir"
            print(f"gate --run: the baseline's data dir {recorded} is not here; using {fallback} (pass --data-dir)",
                  file=sys.stderr)
    if args.judge_args:
        judge_args = parse_kv(args.judge_args, "--judge-args")
    else:  # the baseline's judge args belong to the baseline's judge
        judge_args = {} if args.judge and args.judge != cfg.get("judge") else cfg.get("judge_args") or {}
    return RunConfig(
        tasks=_tasks(args.tasks) or list(base.tasks), model=args.model, backend=args.backend,
        model_args=parse_kv(args.model_args, "--model-args"), task_args=cfg.get("task_args") or {},
        limit=cfg.get("limit"), data_dir=data_dir, output_dir=args.output_dir, use_cache=not args.no_cache,
        seed=cfg.get("seed", 1234), samples_per_task=cfg.get("samples_per_task", 1),
        temperature=cfg.get("temperature"), allow_code_execution=bool(cfg.get("allow_code_execution")),
        judge=args.judge or cfg.get("judge"), judge_args=dict(judge_args), options=cfg.get("options") or {},
    )


def _candidate_run(args: argparse.Namespace) -> Path:
    from evalsuite.runner import run_eval

    config = candidate_config(args)
    print(f"gate --run: evaluating {args.model} on {', '.join(config.tasks)} with the baseline's configuration",
          file=sys.stderr)
    return run_eval(config).path


def run_gate(args: argparse.Namespace) -> int:
    """The gate; an unexpected exception is exit 2 (input/usage error), never 1 (which means regression)."""
    from evalsuite.errors import EvalsuiteError

    try:
        return _run_gate(args)
    except EvalsuiteError:
        raise
    except Exception as exc:  # noqa: BLE001 - exit 1 is reserved for "regression found"
        if getattr(args, "debug", False) or os.environ.get("EVALSUITE_DEBUG") == "1":
            raise
        raise EvalsuiteError(f"gate could not check the runs: {type(exc).__name__}: {exc} "
                             "(re-run with --debug for the traceback)") from exc


def _run_gate(args: argparse.Namespace) -> int:
    from evalsuite.errors import UsageError
    from evalsuite.reports.compare import compare, load_runs
    from evalsuite.reports.gate import gate, load_rules

    from evalsuite.reports.reporters import write_reports

    reports = _report_pairs(args)  # an unknown format fails before any model runs
    overrides = {k: v for k, v in (("alpha", args.alpha), ("max_drop", args.max_drop)) if v is not None}
    rules = load_rules(args.rules, overrides)  # a bad rules file fails before any model runs
    if args.run:
        candidate = _candidate_run(args)
    elif args.candidate:
        candidate = Path(args.candidate)
    else:
        raise UsageError("gate needs --candidate RUN, or --run --model M to evaluate the candidate first")
    comp = compare(load_runs([args.baseline, candidate]), tasks=_tasks(args.tasks),
                   allow_mismatch=args.allow_mismatch, n_boot=args.n_boot, seed=args.seed)
    result = gate(comp, rules, tasks=_tasks(args.tasks))

    from rich.markup import escape

    from evalsuite.reports.terminal import gate_notes, gate_table

    console = _console()
    warnings = comp.warnings + result.warnings
    for w in warnings:
        console.print(f"[bold yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    console.print(gate_table(result))
    for line, style in gate_notes(result):  # unwrapped, so a CI log shows each reason on one greppable line
        console.print(line, style=style, soft_wrap=True, highlight=False, markup=False)
    for line in result.notes:  # per task: the smallest drop its paired tests can tell from noise
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    verdict = "FAIL" if result.failed else "PASS"
    summary = (f"evalsuite gate: {verdict} ({len(result.failed)} of {len(result.checks)} checks failed)"
               + (f" — with warnings: {len(warnings)}" if warnings else ""))
    console.print(summary, style="bold red" if result.failed else "bold green", highlight=False)
    _print_decontamination(console, comp)
    write_reports(reports, comp, result, html={"arena_runs": _arena_runs(args)}, junit={"summary": summary})
    return result.exit_code


# ---------------------------------------------------------------------------- report
def configure_report(p: argparse.ArgumentParser) -> None:
    p.description = ("Write one self-contained HTML report (opens offline): for one run its scores with 95% CIs and "
                     "every sample; for several runs (the first is the baseline) the verdict, paired tests, a forest "
                     "plot and every sample side by side; for a training run its loss and per-checkpoint scores with CIs.")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run directories, the first is the baseline; TRAIN_RUN@step-N is one checkpoint of a training run")
    p.add_argument("-o", "--output", default="report.html", metavar="PATH", help="where to write it (default: report.html)")
    p.add_argument("--title", help="page title (default: the run names)")
    p.add_argument("--rules", metavar="YAML",
                   help="gate the second run against the first with these rules (see examples/gate.yaml); the verdict "
                        "line shows the gate's result")
    p.add_argument("--gate", action="store_true", help="gate the second run against the first with the default rules")
    p.add_argument("--tasks", help="report only these tasks (comma-separated); default: all tasks")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare even when sample sets, task versions or configs differ (said in the report)")
    p.add_argument("--n-boot", type=positive, default=2000, help="paired bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--arena", metavar="RUN", action="append", default=[],
                   help="an `evalsuite arena` run directory whose ratings the report shows (repeatable)")
    p.add_argument("--human", metavar="STORE", action="append", default=[],
                   help="an `evalsuite annotate` store or its export run dir, made from these runs: a Human judgments "
                        "section (repeatable)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")


def run_report(args: argparse.Namespace) -> int:
    from evalsuite.errors import UsageError
    from evalsuite.reports.compare import compare
    from evalsuite.reports.html_groups import single_comparison
    from evalsuite.rundir import load_run

    if args.n_boot < 1:
        raise UsageError(f"--n-boot must be at least 1, got {args.n_boot}")
    runs = [load_run(p) for p in args.runs]
    gating = bool(args.rules or args.gate)
    if gating and len(runs) < 2:
        raise UsageError("--rules/--gate need two runs: BASELINE CANDIDATE (the candidate is gated against the baseline)")
    tasks = _tasks(args.tasks)
    if len(runs) == 1:
        comp = single_comparison(runs[0], n_boot=args.n_boot, seed=args.seed)
        if tasks:
            unknown = sorted(set(tasks) - set(comp.tasks))
            if unknown:
                raise UsageError(f"--tasks: {', '.join(unknown)} not in {args.runs[0]} (its tasks: {', '.join(comp.tasks)})")
            comp.tasks = [t for t in comp.tasks if t in tasks]
            comp.rows = [r for r in comp.rows if r.task in tasks]
    else:
        comp = compare(runs, tasks=tasks, allow_mismatch=args.allow_mismatch, n_boot=args.n_boot, seed=args.seed)
    result = None
    if gating:
        from evalsuite.reports.gate import gate, load_rules

        result = gate(comp, load_rules(args.rules), tasks=tasks)
    if args.human:
        from evalsuite.reports.human import load_human

        comp.human = load_human(args.human, comp, _arena_runs(args), seed=args.seed)
    from evalsuite.reports.reporters import write_reports

    write_reports([("html", Path(args.output))], comp, result,
                  html={"title": args.title, "arena_runs": _arena_runs(args), "n_boot": args.n_boot, "seed": args.seed})
    return 0


def _console() -> Any:
    """A rich console; in a CI log (not a terminal, no COLUMNS) 160 columns wide, not rich's 80.

    At 80 columns task and metric names fold over several lines, which makes a log hard to grep."""
    from rich.console import Console

    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=160 if wide else None)
