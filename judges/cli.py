"""`evalsuite arena RUN_A RUN_B [RUN_C ...] --task NAME --judge MODEL`: a pairwise arena.

Every pair of runs is judged on the prompts both answered (each turn of a multi-turn task, both
orders), then Bradley-Terry ratings with bootstrap CIs, online Elo and the win-rate matrix are
written to a new run dir: results.json["arena"] = {"ratings": {model: {"rating", "lo", "hi"}},
"elo", "win_matrix", ...}, one samples.jsonl line per battle with the judge log. Judgments go
through the call cache, so re-running after a failure asks the judge only what is missing.
Only stdlib at import time: the CLI imports this module to add the sub-command.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any


def configure_arena(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="two or more run directories of the same task")
    parser.add_argument("--task", required=True, help="the task whose answers are compared (e.g. mt_bench, winrate)")
    parser.add_argument("--judge", required=True, help="judge model spec (any backend, e.g. openai:gpt-4o, smollm2-135m)")
    parser.add_argument("--judge-args", help="key=value[,...] for the judge's backend (e.g. base_url=...)")
    parser.add_argument("--judge-template", help="pairwise prompt template: a file or module:attr (default: built-in)")
    parser.add_argument("--judge-samples", type=int, default=1, help="median of k judgments per order (default 1)")
    parser.add_argument("--judge-max-tokens", type=int, default=512)
    parser.add_argument("--judge-temperature", type=float, default=None)
    parser.add_argument("--no-reference", action="store_true", help="do not show reference answers to the judge")
    parser.add_argument("--limit", type=int, default=None, help="judge at most N shared samples per pair")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap rounds for the rating CIs (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("--cache-path", default=None, help="call-cache file (default: the user cache)")
    parser.add_argument("--no-cache", action="store_true", help="ask the judge again even where it has answered")
    parser.add_argument("--human", metavar="STORE", help="an `evalsuite annotate` store: rate the humans' pairwise and "
                        "ranking votes too (Bradley-Terry with CIs), beside the judge's")
    parser.add_argument("--max-judge-errors", type=float, default=0.2,
                        help="fail (exit 1, run kept) when more than this share of judgments are errors (default 0.2)")


def run_arena(args: argparse.Namespace) -> int:
    from evalsuite.judges.pairwise import PairwiseJudge

    from evalsuite import rundir
    from evalsuite.cache import CallCache, NullCache
    from evalsuite.cli import parse_kv
    from evalsuite.errors import UsageError
    from evalsuite.runner import ModelClient

    if len(args.runs) < 2:
        raise UsageError("an arena needs at least two run directories")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be a positive number, got {args.limit}")
    if not 0.0 <= args.max_judge_errors <= 1.0:
        raise UsageError(f"--max-judge-errors takes a share between 0 and 1, got {args.max_judge_errors}")
    human = human_ratings(args.human, args.bootstrap, args.seed) if args.human else None  # checked before judging
    contestants = load_contestants(args.runs, args.task)
    judge = PairwiseJudge(template=args.judge_template, samples=args.judge_samples, max_tokens=args.judge_max_tokens,
                          temperature=args.judge_temperature, seed=args.seed)
    jobs, meta = build_battles(contestants, judge, args.limit, use_reference=not args.no_reference)
    if not jobs:
        raise UsageError(f"the runs share no answered samples of task '{args.task}': nothing to judge")
    cache = NullCache() if args.no_cache else CallCache(Path(args.cache_path) if args.cache_path else None)
    client = ModelClient(args.judge, parse_kv(args.judge_args, "--judge-args"), cache)
    try:
        from evalsuite.judges.base import run_judges

        judgments = run_judges(client, jobs, f"arena {args.task}")
        results, records = summarize(args, contestants, judge, client, meta, judgments)
    finally:
        cache.close()
        client.close()
    if human:
        results.arena.human = human
    out = rundir.new_run_dir(args.output_dir, "arena", [args.task])  # made once the judging is done: none left empty
    writer = rundir.RunWriter(out, results)
    writer.add_task(f"arena:{args.task}", results.tasks.pop(f"arena:{args.task}"), records)
    writer.finish("complete")
    _print(results, out)
    failed = results.arena.judge_errors / max(1, len(judgments))
    if failed > args.max_judge_errors:
        from evalsuite.errors import JudgeHealthError

        first = next((j for j in judgments if j.value is None), None)
        why = (first.log.get("verdicts") or first.error or "") if first is not None else ""
        raise JudgeHealthError(f"arena {args.task}: {failed:.0%} of judgments were errors, over the "
                               f"{args.max_judge_errors:.0%} allowed; first failed verdict: {str(why)[:160]!r}; "
                               f"the run is kept in {out} (pass --max-judge-errors to accept more)")
    return 0


def load_contestants(paths: list[str], task: str) -> dict[str, dict[str, Any]]:
    """Model name -> {"path", "records": {sample id: record}}; names made unique by run dir."""
    from evalsuite import rundir
    from evalsuite.errors import UsageError

    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        log = rundir.load_run(path)
        records = {r.sample.id: r for r in log.records_for(task) if r.error is None and r.outputs}
        if not records:
            raise UsageError(f"{path} has no answered samples of task '{task}'")
        name = log.name
        if name in out:
            name = f"{name} ({Path(path).name})"
        out[name] = {"path": str(Path(path).resolve()), "records": records}
    return out


def build_battles(contestants: dict[str, dict[str, Any]], judge: Any, limit: int | None,
                  use_reference: bool = True) -> tuple[list[tuple[Any, Any]], list[dict[str, Any]]]:
    """One pairwise job per (pair of models, shared sample, turn), with what identifies it."""
    from evalsuite.judges.base import JudgeItem
    from evalsuite.judges.tasking import answers, questions, references

    jobs, meta = [], []
    for x, y in itertools.combinations(contestants, 2):
        rx, ry = contestants[x]["records"], contestants[y]["records"]
        shared = [sid for sid in rx if sid in ry][:limit]
        for sid in shared:
            qs = questions(rx[sid])
            ax, ay = answers(rx[sid], len(qs)), answers(ry[sid], len(qs))
            refs = references(rx[sid]) if use_reference else None
            if len(ax) < len(qs) or len(ay) < len(qs):
                continue
            turns = [{"question": q, "answer_a": a, "answer_b": b,
                      "reference": refs[i] if refs and i < len(refs) else None}
                     for i, (q, a, b) in enumerate(zip(qs, ax, ay))]
            for t in range(1, len(turns) + 1):
                jobs.append((judge, JudgeItem(turns, focus=t)))
                meta.append({"model_a": x, "model_b": y, "sample_id": sid, "turn": t, "question": qs[t - 1]})
    return jobs, meta


def summarize(args: argparse.Namespace, contestants: dict[str, Any], judge: Any, client: Any,
              meta: list[dict[str, Any]], judgments: list[Any]) -> tuple[Any, list[Any]]:
    """The arena's typed run log and one SampleRecord per battle."""
    from evalsuite.judges import arena
    from evalsuite.judges.tasking import judge_info

    from evalsuite import runlog, stats
    from evalsuite.records import Sample, SampleRecord, Score

    battles = [(m["model_a"], m["model_b"], j.value) for m, j in zip(meta, judgments) if j.value is not None]
    inconsistent = [j.extra["inconsistent"] for j in judgments if j.value is not None]
    errors = sum(j.value is None for j in judgments)
    records = []
    for m, j in zip(meta, judgments):
        sample = Sample(id=f"{m['model_a']} vs {m['model_b']} | {m['sample_id']} | turn {m['turn']}",
                        input=m["question"], metadata={k: v for k, v in m.items() if k != "question"})
        values = {"win_a": j.value, **j.extra}
        records.append(SampleRecord(f"arena:{args.task}", sample, [], [], Score(values, j.value, j.log), j.error))
    task_key = f"arena:{args.task}"
    position = stats.metric(inconsistent)
    results = runlog.RunResults(
        kind="arena", status="running", created=runlog.now(), environment=runlog.environment(),
        model=runlog.ModelInfo(name="arena", backend="arena"),
        config={k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))},
        arena=runlog.Arena(
            ratings=arena.bradley_terry(battles, n_boot=args.bootstrap, seed=args.seed), elo=arena.elo(battles),
            win_matrix=arena.win_matrix(battles), battles=len(battles), judge_errors=errors,
            position_inconsistency=position, runs={name: c["path"] for name, c in contestants.items()},
            judge=judge_info(client, [judge])),
        tasks={task_key: runlog.TaskResult(n=len(judgments), errors=errors, metrics={
            "position_inconsistency": runlog.metric(position["value"], position["stderr"], position["n"],
                                                    higher_is_better=False)})})
    return results, records


def _print(results: Any, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    a = results.arena
    elo = getattr(a, "elo", None) or {}
    table = Table("model", "rating", "95% CI", "elo", title=f"arena ({a.battles} battles, "
                  f"{getattr(a, 'judge_errors', 0)} judge errors) → {out}", title_justify="left")
    order = [name for name, _ in sorted(a.ratings.items(), key=lambda kv: -kv[1].rating)]
    for name in order:
        r = a.ratings[name]
        table.add_row(name, f"{r.rating:.0f}", f"{r.lo:.0f} – {r.hi:.0f}", f"{elo.get(name, float('nan')):.0f}")
    console = Console()
    console.print(table)
    console.print(win_matrix_table(a.win_matrix, order))
    human = getattr(a, "human", None)
    if human:
        hum = Table("model", "human rating", "95% CI", title=f"humans ({human['battles']} votes)", title_justify="left")
        for name, r in sorted(human["ratings"].items(), key=lambda kv: -kv[1]["rating"]):
            hum.add_row(name, f"{r['rating']:.0f}", f"{r['lo']:.0f} – {r['hi']:.0f}")
        console.print(hum)


def human_ratings(store: str, n_boot: int, seed: int) -> dict[str, Any]:
    """Bradley-Terry ratings of the human votes in an annotation store (same fit and CIs as the judge's)."""
    from evalsuite.annotate import human_battles
    from evalsuite.judges import arena

    from evalsuite.errors import UsageError

    if not Path(store).is_file():
        raise UsageError(f"--human {store}: no such annotation store (made by `evalsuite annotate`)")
    battles = human_battles(store)
    if not battles:
        raise UsageError(f"--human {store}: the store holds no pairwise or ranking votes yet")
    return {"store": str(Path(store).resolve()), "battles": len(battles),
            "ratings": arena.bradley_terry(battles, n_boot=n_boot, seed=seed), "win_matrix": arena.win_matrix(battles)}


def win_matrix_table(matrix: dict[str, dict[str, float | None]], order: list[str]) -> Any:
    """The win-rate matrix as a table: the row model's mean score against the column model (tie = 0.5, – = never met)."""
    from rich.table import Table

    table = Table("model vs →", *order, title="win rate, row vs column", title_justify="left")
    for row in order:
        cells = [f"{v:.2f}" if (v := matrix.get(row, {}).get(col)) is not None else "–" for col in order]
        table.add_row(row, *cells)
    return table
