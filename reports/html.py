"""The self-contained HTML report (jinja2 template, inline CSS/JS/SVG, no network).

One file that opens offline and as an e-mail attachment, laid out around the decision: a verdict
line (what improved, what regressed significantly, what is noise; the gate's result), scores with
95% CIs and paired tests per task and per group, a forest plot of every tested metric, trainer
checkpoints with CIs, judge win rates / arena ratings, then every sample in a searchable table
(rendered client-side from an embedded JSON blob) and, last and collapsed, the run metadata.
It works for one run (no deltas), N runs (a model per column) and trainer runs. This module builds
plain dicts for the template; `templates/report.html.j2` only lays them out.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalsuite.reports import plots
from evalsuite.reports.behaviour import html_view as behaviour_view
from evalsuite.reports.numbers import fmt_number as _num
from evalsuite.reports.numbers import fmt_pvalue as _p
from evalsuite.reports.html_groups import group_rows, item_rows
from evalsuite.reports.html_samples import blob, sample_rows
from evalsuite.reports.html_training import training_sections

if TYPE_CHECKING:
    from evalsuite.reports.compare import Comparison, MetricRow
    from evalsuite.reports.gate import GateResult
    from evalsuite.rundir import RunLog

TEMPLATES = Path(__file__).parent / "templates"
ALPHA = 0.05
# What judge tasks report as their headline: winrate / MT-Bench pairwise `win` (+ `lc_win_rate`), and
# MT-Bench single mode's 1-10 `score` (only for tasks whose config names a judge).
WIN_METRICS = ("win", "lc_win_rate", "win_rate")
JUDGE_SCORE_METRICS = ("score",)
SHORT_METHOD = {"mcnemar-exact": "McNemar", "paired-bootstrap": "bootstrap", "paired-cluster-bootstrap": "cluster bootstrap"}




def metadata_rows(runs: list[RunLog]) -> list[dict[str, Any]]:
    """(field, one value per run, differs?) for model, config, versions and provenance."""
    def flat(run: RunLog) -> dict[str, str]:
        res = run.results
        out = {"run directory": str(run.path), "created": res.created, "status": res.state(),
               "git sha": res.environment.git_sha or ""}
        sections = {"model": res.model.model_dump(), "config": res.config, "versions": res.environment.versions,
                    "plugins": res.environment.plugins}
        for section, values in sections.items():
            for key, value in values.items():
                if value in (None, "", [], {}):
                    continue
                out[f"{section}.{key}"] = value if isinstance(value, str) else json.dumps(value, default=str)
        for task, entry in res.tasks.items():
            out[f"task {task} version"] = entry.version
            out[f"task {task} n / errors / missing"] = f"{entry.n} / {entry.errors} / {len(entry.missing)}"
        return out

    flats = [flat(r) for r in runs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    rows = [{"field": k, "values": [f.get(k, "") for f in flats],
             "differs": len({f.get(k, "") for f in flats}) > 1 and k != "run directory"} for k in keys]
    for row in rows:  # always shown: which directory each column is, and whatever differs
        row["shown"] = row["differs"] or row["field"] in ("run directory", "status") or len(runs) == 1
    return rows


def significant(row: MetricRow, i: int) -> int:
    """+1: run i is significantly better than the baseline on this row; -1 significantly worse; 0 noise."""
    t = row.tests[i] if i < len(row.tests) else None
    if t is None or row.diagnostic or not t.pvalue < ALPHA or t.delta == 0 or not math.isfinite(t.delta):
        return 0
    return 1 if (t.delta > 0) == row.higher_is_better else -1


def ordered_rows(comp: Comparison, extra: Sequence[MetricRow] = (),
                 replaced: dict[tuple[str, str], MetricRow] | None = None) -> list[MetricRow]:
    """Per task: its overall rows (`replaced` by per-item ones where given), then its groups' rows."""
    out = []
    replaced = replaced or {}
    for task in comp.tasks:
        out += [replaced.get((r.task, r.metric), r) for r in comp.rows if r.task == task and r.group is None]
        out += [r for r in comp.rows if r.task == task and r.group is not None]
        out += [r for r in extra if r.task == task]
    return out


def score_rows(comp: Comparison, rows: Sequence[MetricRow]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        cells = [{"value": _num(e.value) if e else "–", "ci": f"[{_num(e.lo, 3)}, {_num(e.hi, 3)}]" if e else "",
                  "n": e.n if e else 0} for e in row.estimates]
        deltas = []
        for i in range(1, len(comp.runs)):
            d, t, sig = row.delta(i), row.tests[i], significant(row, i)
            deltas.append({"delta": f"{d:+.4f}" if d is not None and math.isfinite(d) else "–",
                           "ci": f"[{t.lo:+.3f}, {t.hi:+.3f}]" if t and math.isfinite(t.lo) else "",
                           "p": _p(t.pvalue) if t else "–", "method": SHORT_METHOD.get(t.method, t.method) if t else "–",
                           "method_long": t.method if t else "no per-sample scores: no paired test",
                           "flips": f"−{t.a_only} / +{t.b_only}" if t and t.method == "mcnemar-exact" else "",
                           "cls": {1: "good", -1: "bad", 0: ""}[sig]})
        out.append({"task": row.task, "group": row.group, "metric": row.metric, "cells": cells, "deltas": deltas,
                    "judge": is_judge_metric(comp, row.task, row.metric), "diagnostic": row.diagnostic,
                    "sig": any(d["cls"] for d in deltas)})
    return out


def is_judge_metric(comp: Comparison, task: str, metric: str) -> bool:
    """A judge task's headline metric: a win rate, or the judge's score of a task whose config names a judge."""
    if metric in WIN_METRICS or metric.endswith("_win_rate"):
        return True
    judged = any(entry.config.get("judge") for run in comp.runs if (entry := run.tasks.get(task)) is not None)
    return metric in JUDGE_SCORE_METRICS and judged


def verdicts(comp: Comparison, rows: Sequence[MetricRow]) -> list[dict[str, Any]]:
    """Per candidate run: the rows that improved and regressed significantly, and how many are noise."""
    out = []
    for i in range(1, len(comp.runs)):
        better, worse, noise, untested = [], [], 0, 0
        for row in rows:
            if row.diagnostic:
                continue
            t = row.tests[i]
            if t is None:
                untested += 1
                continue
            item = {"name": f"{row.label} {row.metric}", "delta": f"{t.delta:+.4f}", "p": _p(t.pvalue),
                    "group": row.group is not None}
            sig = significant(row, i)
            if sig > 0:
                better.append(item)
            elif sig < 0:
                worse.append(item)
            else:
                noise += 1
        out.append({"label": comp.labels[i], "better": better, "worse": worse, "noise": noise, "untested": untested})
    return out


def single_summary(comp: Comparison, rows: Sequence[MetricRow]) -> dict[str, Any]:
    run = comp.runs[0]
    truncated = sum(1 for r in run.records if _is_truncated(r))
    return {"tasks": len(comp.tasks), "samples": len(run.records), "errors": sum(1 for r in run.records if r.error),
            "truncated": truncated,
            "headline": [{"task": r.task, "metric": r.metric, "value": _num(e.value),
                          "ci": f"[{_num(e.lo, 3)}, {_num(e.hi, 3)}]"}
                         for r in rows if r.group is None and not r.diagnostic and (e := r.estimates[0])]}


def _is_truncated(record: Any) -> bool:
    from evalsuite.reports.html_samples import truncated

    return truncated(record)


def forest_svgs(comp: Comparison, rows: Sequence[MetricRow]) -> list[str]:
    """Every row with a paired test, significant points filled: rates in one plot, other scales in another."""
    if len(comp.runs) < 2:
        return []
    tested = [r for r in rows if any(t is not None and math.isfinite(t.lo) for t in r.tests[1:])]
    out = []
    for part, x_label in (([r for r in tested if r.unit_interval], "Δ vs baseline (95% CI)"),
                          ([r for r in tested if not r.unit_interval], "Δ vs baseline (95% CI), other scales")):
        if not part:
            continue
        series, marks = [], []
        for i in range(1, len(comp.runs)):
            pts = [(t.delta, t.lo, t.hi) if (t := r.tests[i]) is not None and math.isfinite(t.lo) else None
                   for r in part]
            series.append((comp.labels[i], pts))
            marks.append([significant(r, i) != 0 for r in part])
        labels = [f"{r.label} · {r.metric}" for r in part]
        out.append(plots.forest(labels, series, x_label, marks))
    return out


def arena_sections(comp: Comparison, arena_runs: Sequence[RunLog] = ()) -> list[dict[str, Any]]:
    """Arena ratings with CIs (and the win matrix) from results.json "arena" sections (`evalsuite arena`)."""
    out = []
    named = list(zip(comp.labels, comp.runs)) + [(run.path.name, run) for run in arena_runs]
    for label, run in named:
        arena = run.results.arena
        if arena is None or not arena.ratings:
            continue
        ratings = arena.ratings
        names = sorted(ratings, key=lambda m: -ratings[m].rating)
        vals = [(ratings[m].rating, ratings[m].lo, ratings[m].hi) for m in names]
        matrix = arena.win_matrix
        out.append({"label": label, "svg": plots.ratings(names, vals),
                    "ratings": [{"model": m, "rating": _num(v, 1), "lo": _num(lo, 1), "hi": _num(hi, 1)}
                                for m, (v, lo, hi) in zip(names, vals)],
                    "matrix_models": names if matrix else [],
                    "matrix": [[_num((matrix.get(a) or {}).get(b), 3) if a != b else "" for b in names]
                               for a in names] if matrix else []})
    return out


def gate_view(result: GateResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {"passed": result.passed, "n": len(result.checks), "failed": len(result.failed), "warnings": result.warnings,
            "checks": [{"status": c.status, "name": c.name, "metric": c.metric, "baseline": _num(c.baseline),
                        "candidate": _num(c.candidate), "delta": f"{c.delta:+.4f}" if c.delta is not None
                        and math.isfinite(c.delta) else "–", "p": _p(c.pvalue), "message": c.message}
                       for c in result.checks]}


def render_html(comparison: Comparison, gate_result: GateResult | None = None, title: str | None = None,
                arena_runs: Sequence[RunLog] = (), n_boot: int = 2000, seed: int = 0) -> str:
    """The comparison (one run or several; optional gate result, arena runs) as one self-contained HTML document."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    comp = comparison
    rows = ordered_rows(comp, group_rows(comp, n_boot, seed), item_rows(comp))
    scores = score_rows(comp, rows)
    samples = sample_rows(comp.runs, comp.tasks)
    single = len(comp.runs) == 1
    default_title = f"evalsuite: {comp.labels[0]}" if single else f"evalsuite: {' vs '.join(comp.labels)}"
    return env.get_template("report.html.j2").render(
        title=title or default_title, single=single,
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        labels=comp.labels, warnings=comp.warnings, metadata=metadata_rows(comp.runs),
        verdicts=[] if single else verdicts(comp, rows), summary=single_summary(comp, rows) if single else None,
        scores=scores, has_groups=any(r["group"] for r in scores), win_rates=[r for r in scores if r["judge"]],
        forests=forest_svgs(comp, rows), samples_json=blob(samples), n_samples=len(samples),
        n_changed=sum(1 for s in samples if s["changed"]), sample_tasks=list(comp.tasks),
        training=training_sections(comp, n_boot, seed), arena=arena_sections(comp, arena_runs),
        gate=gate_view(gate_result), behaviour=behaviour_view(comp),
        decontamination=[{"label": k, "text": "\n".join(v)} for k, v in comp.decontamination.items()],
        human=_human_section(comp),
    )


def _human_section(comp: Comparison) -> Any:
    """`compare --human`'s block (reports/html_human.py), already escaped; "" without one."""
    import markupsafe

    from evalsuite.reports.html_human import human_section

    return markupsafe.Markup(human_section(getattr(comp, "human", [])))
