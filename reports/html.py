"""The self-contained HTML comparison report (jinja2 template, inline CSS/JS/SVG, no network).

One file that opens offline and as an e-mail attachment: run metadata side by side, scores with
95% CIs, paired deltas with p-values, a forest plot, the samples whose verdict changed (searchable,
vanilla JS), trainer checkpoints as line charts, and judge win rates / arena ratings.
This module builds plain dicts for the template; `templates/report.html.j2` only lays them out.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalsuite import registry
from evalsuite.reports import plots

if TYPE_CHECKING:
    from evalsuite.reports.compare import Comparison
    from evalsuite.reports.gate import GateResult
    from evalsuite.rundir import RunLog

TEMPLATES = Path(__file__).parent / "templates"
MAX_CHANGED = 2000  # rows of the changed-verdicts table; beyond this the file gets unwieldy
MAX_TEXT = 4000  # characters of one prompt/output shown
# What judge tasks report as their headline: winrate / MT-Bench pairwise `win` (+ `lc_win_rate`), and
# MT-Bench single mode's 1-10 `score` (only for tasks whose config names a judge).
WIN_METRICS = ("win", "lc_win_rate", "win_rate")
JUDGE_SCORE_METRICS = ("score",)


def _num(v: float | None, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if v is not None and math.isfinite(v) else "–"


def _p(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.3g}" if v >= 1e-4 else f"{v:.1e}"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f" … [{len(text) - MAX_TEXT} more characters]"


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
    return [{"field": k, "values": [f.get(k, "") for f in flats],
             "differs": len({f.get(k, "") for f in flats}) > 1 and k != "run directory"} for k in keys]


def score_rows(comp: Comparison) -> list[dict[str, Any]]:
    rows = []
    for row in comp.rows:
        cells = [{"value": _num(e.value) if e else "–", "ci": f"[{_num(e.lo, 3)}, {_num(e.hi, 3)}]" if e else "",
                  "n": e.n if e else 0} for e in row.estimates]
        deltas = []
        for i in range(1, len(comp.runs)):
            d, t = row.delta(i), row.tests[i]
            sig = t is not None and t.pvalue < 0.05 and (d or 0) != 0 and not row.diagnostic
            good = d is not None and (d > 0) == row.higher_is_better
            deltas.append({"delta": f"{d:+.4f}" if d is not None and math.isfinite(d) else "–",
                           "ci": f"[{t.lo:+.3f}, {t.hi:+.3f}]" if t and math.isfinite(t.lo) else "",
                           "p": _p(t.pvalue) if t else "–", "method": t.method if t else "no per-sample scores",
                           "flips": f"−{t.a_only} / +{t.b_only}" if t and t.method == "mcnemar-exact" else "",
                           "cls": ("good" if good else "bad") if sig else ""})
        rows.append({"task": row.task, "group": row.group, "metric": row.metric, "cells": cells, "deltas": deltas,
                     "judge": is_judge_metric(comp, row.task, row.metric)})
    return rows


def is_judge_metric(comp: Comparison, task: str, metric: str) -> bool:
    """A judge task's headline metric: a win rate, or the judge's score of a task whose config names a judge."""
    if metric in WIN_METRICS or metric.endswith("_win_rate"):
        return True
    judged = any(entry.config.get("judge") for run in comp.runs if (entry := run.tasks.get(task)) is not None)
    return metric in JUDGE_SCORE_METRICS and judged


def forest_svg(comp: Comparison) -> str:
    rows = [r for r in comp.rows if r.group is None] or comp.rows
    series = []
    for i in range(1, len(comp.runs)):
        pts = []
        for r in rows:
            t = r.tests[i]
            pts.append((t.delta, t.lo, t.hi) if t is not None and math.isfinite(t.lo) else None)
        series.append((comp.labels[i], pts))
    if not any(p for _, pts in series for p in pts):
        return ""
    return plots.forest([f"{r.task} · {r.metric}" for r in rows], series)


def changed_rows(comp: Comparison) -> list[dict[str, Any]]:
    return [{"run": comp.labels[c.run], "task": c.task, "id": c.id, "metric": c.metric, "direction": c.direction,
             "prompt": _clip(c.prompt), "target": _clip(c.target), "outputs": [_clip(o) for o in c.outputs],
             "answers": c.answers, "scores": [json.dumps(s, default=str) for s in c.scores]}
            for c in comp.changed[:MAX_CHANGED]]


def training_sections(comp: Comparison) -> list[dict[str, Any]]:
    """Per trainer run: a loss chart (per logged step and per checkpoint) and a score chart, best step marked."""
    out = []
    for label, run in zip(comp.labels, comp.runs):
        training = run.results.training
        if training is None or not training.steps:
            continue
        steps = sorted(training.steps, key=lambda s: s.step)
        xs = [float(s.step) for s in steps]
        best = {"step": training.best.step, "metric": training.best.metric} if training.best else {"step": None, "metric": None}
        best_x = float(best["step"]) if best["step"] is not None else None
        losses: dict[str, tuple[list[float], list[Any]]] = {}
        curve = [c for c in training.curve if c.get("loss") is not None]
        if curve:
            losses["train_loss (per step)"] = ([float(c["step"]) for c in curve], [c["loss"] for c in curve])
        for key in ("train_loss", "val_loss"):
            if any(getattr(s, key) is not None for s in steps):
                losses[key] = (xs, [getattr(s, key) for s in steps])
        names = list(dict.fromkeys(k for s in steps for k in s.scores))
        scores = {k: (xs, [s.scores.get(k) for s in steps]) for k in names}
        charts = []
        if losses:
            charts.append(plots.lines(f"{label}: loss", "step", losses, best_x))
        if scores:
            charts.append(plots.lines(f"{label}: scores per checkpoint", "step", scores, best_x))
        columns = ["train_loss", "val_loss"]
        table = [{"step": s.step, "best": s.step == best["step"],
                  "values": [_num(getattr(s, k)) for k in columns] + [_num(s.scores.get(k)) for k in names]}
                 for s in steps]
        out.append({"label": label, "charts": charts, "columns": ["train_loss (window mean)", "val_loss"] + names,
                    "table": table, "best": best})
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


@registry.reporter("html", "self-contained HTML comparison report (inline CSS/JS/SVG, opens offline)")
def render_html(comparison: Comparison, gate_result: GateResult | None = None, title: str | None = None,
                arena_runs: Sequence[RunLog] = ()) -> str:
    """The comparison (and optional gate result, arena runs) as one self-contained HTML document."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    comp = comparison
    changed = changed_rows(comp)
    scores = score_rows(comp)
    return env.get_template("report.html.j2").render(
        title=title or f"evalsuite: {' vs '.join(comp.labels)}",
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        labels=comp.labels, warnings=comp.warnings, metadata=metadata_rows(comp.runs),
        scores=scores, win_rates=[r for r in scores if r["judge"]], forest=forest_svg(comp), changed=changed,
        changed_total=len(comp.changed), changed_tasks=sorted({c["task"] for c in changed}),
        training=training_sections(comp), arena=arena_sections(comp, arena_runs), gate=gate_view(gate_result),
        decontamination=[{"label": k, "text": "\n".join(v)} for k, v in comp.decontamination.items()],
    )
