"""Score rows the comparison itself does not build: one run alone, and groups not keyed by sample metadata.

`compare` splits a task into groups by a sample metadata key (MMLU's subject). IFEval's groups are
instruction types, several per prompt, so no metadata key gives them; their per-instruction verdicts
are in each sample's answer (`instruction_id_list` with `strict`/`loose` lists). From those this module
builds the per-group rows with CIs and paired tests (McNemar over the instructions both runs scored,
treating instructions as independent). Groups with no per-item answers fall back to the stored value
and stderr (a normal CI, no paired test).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from evalsuite import stats
from evalsuite.reports.compare import Comparison, MetricRow, _rows_for, group_key
from evalsuite.reports.metrics import is_diagnostic

if TYPE_CHECKING:
    from evalsuite.rundir import RunLog

ITEM_METRICS = {"strict": "inst_level_strict_acc", "loose": "inst_level_loose_acc"}
OVERALL = "\0overall"  # the items of every group: the task-level instruction metrics
Items = dict[str, dict[str, dict[tuple[str, int], float]]]  # group -> metric -> (sample id, item) -> 0/1


def single_comparison(run: RunLog, n_boot: int = 2000, seed: int = 0) -> Comparison:
    """One run as a comparison with one column: scores with CIs, per task and per group, no tests."""
    rows: list[MetricRow] = []
    tasks = list(run.tasks)
    for task in tasks:
        records = run.records_for(task)
        rows += _rows_for([run], task, None, [records], n_boot, seed)
        key = group_key(run, task)
        if key:
            for group in sorted(run.tasks[task].groups):
                part = [r for r in records if str(r.sample.metadata.get(key)) == group]
                rows += _rows_for([run], task, group, [part], n_boot, seed)
    return Comparison([run], [run.name], tasks, rows, [])


def _items(run: RunLog, task: str) -> Items:
    out: Items = {}
    for r in run.records_for(task):
        ans = r.score.answer if r.score is not None and r.error is None else None
        ids = ans.get("instruction_id_list") if isinstance(ans, dict) else None
        if not isinstance(ids, list):
            continue
        for key, metric in ITEM_METRICS.items():
            vals = ans.get(key)  # type: ignore[union-attr]
            if not isinstance(vals, list) or len(vals) != len(ids):
                continue
            for n, (inst, v) in enumerate(zip(ids, vals)):
                for group in {str(inst), str(inst).split(":")[0], OVERALL}:
                    out.setdefault(group, {}).setdefault(metric, {})[(r.sample.id, n)] = float(v)
    return out


def _stored(run: RunLog, task: str, group: str | None, metric: str) -> stats.Estimate | None:
    entry = run.tasks.get(task)
    if entry is None:
        return None
    m = entry.metrics.get(metric) if group is None else entry.groups.get(group, {}).get(metric)
    if m is None or m.value is None:
        return None
    lo, hi = stats.normal_ci(m.value, m.stderr if m.stderr is not None else math.nan)
    return stats.Estimate(m.value, lo, hi, m.n, "normal")


def group_rows(comp: Comparison, n_boot: int = 2000, seed: int = 0) -> list[MetricRow]:
    """Rows for the stored groups of each task that `comp.rows` lacks, with tests where per-item data allows."""
    have = {(r.task, r.group) for r in comp.rows}
    out: list[MetricRow] = []
    for task in comp.tasks:
        entries = [run.tasks.get(task) for run in comp.runs]
        groups = sorted({g for e in entries if e is not None for g in e.groups if (task, g) not in have})
        if not groups:
            continue
        items = [_items(run, task) for run in comp.runs]
        for group in groups:
            metrics = list(dict.fromkeys(m for e in entries if e is not None for m in e.groups.get(group, {})))
            for metric in metrics:
                out.append(_row(comp, task, group, metric, [it.get(group, {}).get(metric, {}) for it in items]))
    return out


def item_rows(comp: Comparison) -> dict[tuple[str, str], MetricRow]:
    """Task-level per-instruction metrics (IFEval's inst_level_*) of runs that declare no clusters (written
    before IFEval recorded per-prompt parts), rebuilt from the per-item verdicts. Where `compare` already has
    the cluster-bootstrap row (instructions resampled by prompt, as the gate tests them), that row stays."""
    out = {}
    for task in comp.tasks:
        items = [_items(run, task).get(OVERALL, {}) for run in comp.runs]
        for metric in ITEM_METRICS.values():
            row = comp.find(task, metric)
            clustered = row is not None and any(e is not None and e.method == "cluster-bootstrap" for e in row.estimates)
            if row is not None and not clustered and all(it.get(metric) for it in items):
                out[(task, metric)] = _row(comp, task, None, metric, [it[metric] for it in items])
    return out


def _row(comp: Comparison, task: str, group: str | None, metric: str,
         values: list[dict[tuple[str, int], float]]) -> MetricRow:
    stored = [_stored(run, task, group, metric) for run in comp.runs]
    estimates: list[stats.Estimate | None] = []
    per_item: list[bool] = []  # the estimate comes from the per-item values (so a paired test is sound)
    for est, vals in zip(stored, values):
        fresh = stats.score_ci(list(vals.values())) if vals else None
        consistent = fresh is not None and (est is None or math.isclose(fresh.value, est.value, abs_tol=1e-9))
        estimates.append(fresh if consistent else est)
        per_item.append(consistent)
    tests: list[stats.PairedTest | None] = [None]
    for i in range(1, len(comp.runs)):
        shared = [k for k in values[0] if k in values[i]]
        usable = shared and per_item[0] and per_item[i]
        tests.append(stats.paired_test([values[0][k] for k in shared], [values[i][k] for k in shared])
                     if usable else None)
    declared = next((m for run in comp.runs if (e := run.tasks.get(task)) is not None
                     and (m := (e.metrics if group is None else e.groups.get(group, {})).get(metric)) is not None), None)
    return MetricRow(task, metric, group, estimates, tests, declared.higher_is_better if declared else True,
                     is_diagnostic(metric), all(e is None or 0.0 <= e.value <= 1.0 for e in estimates))
