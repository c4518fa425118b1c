"""The data model of a comparison: runs paired sample by sample, with CIs and paired tests.

Everything here reads run directories only (`evalsuite.rundir.load_run`), never a model, so a
comparison is fast and reproducible. The first run is the baseline; every other run is compared
to it on the samples both scored, matched by (task, id). Comparing different sample sets, changed
sample contents (input/target), task versions or task configs is refused (`UsageError`, exit 2;
see `checks.py`) unless the caller allows it, and then `Comparison.warnings` says so. A run's
`decontamination.json` (from the trainer) and its tasks' typed `contamination` entries (a checkpoint's
training data checked at eval time) are summarised in `Comparison.decontamination`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evalsuite import provenance, stats
from evalsuite.errors import UsageError
from evalsuite.records import SampleRecord
from evalsuite.reports.checks import check_runs, decontamination_lines
from evalsuite.reports.metrics import is_diagnostic
from evalsuite.rundir import RunLog, checkpoint_specs, load_run
from evalsuite.runlog import Metric


@dataclass
class MetricRow:
    """One task (or subtask) x metric across all runs; `tests[i]` is run i vs the baseline."""

    task: str
    metric: str
    group: str | None
    estimates: list[stats.Estimate | None]
    tests: list[stats.PairedTest | None]  # index 0 (the baseline) is always None
    higher_is_better: bool = True
    diagnostic: bool = False  # describes outputs (e.g. length_diff): shown, not coloured, not gated by default
    unit_interval: bool = True  # every value lies in [0, 1] (a rate): "points" make sense

    @property
    def label(self) -> str:
        return f"{self.task}/{self.group}" if self.group else self.task

    def delta(self, i: int) -> float | None:
        """Run i minus the baseline: the paired delta when there is one, else the difference of scores."""
        test = self.tests[i]
        if test is not None and math.isfinite(test.delta):
            return test.delta
        a, b = self.estimates[0], self.estimates[i]
        if a is None or b is None:
            return None
        return b.value - a.value


@dataclass
class ChangedSample:
    """A sample whose 0/1 verdict differs between the baseline and run `run`."""

    run: int
    task: str
    id: str
    metric: str
    direction: str  # "lost" (baseline right, run wrong) | "gained"
    prompt: str
    target: str
    outputs: list[str]  # [baseline output, run output]
    scores: list[dict[str, Any]]
    answers: list[str]


@dataclass
class Comparison:
    runs: list[RunLog]
    labels: list[str]
    tasks: list[str]
    rows: list[MetricRow]
    changed: list[ChangedSample]
    warnings: list[str] = field(default_factory=list)
    new_errors: dict[tuple[int, str], int] = field(default_factory=dict)  # (run, task) -> errored only there
    decontamination: dict[str, list[str]] = field(default_factory=dict)  # run label -> summary lines
    human: list[Any] = field(default_factory=list)  # human.HumanBlock per --human store (compare --human)

    def top_rows(self) -> list[MetricRow]:
        return [r for r in self.rows if r.group is None]

    def find(self, task: str, metric: str, group: str | None = None) -> MetricRow | None:
        return next((r for r in self.rows if (r.task, r.metric, r.group) == (task, metric, group)), None)


# ---------------------------------------------------------------------------- loading and checks
def load_runs(paths: Sequence[str | os.PathLike]) -> list[RunLog]:
    """Each run dir (a training run reads as its best checkpoint, `RUN@step-N` as that checkpoint: see
    `rundir.load_run`); one training run alone is every scored checkpoint, compared with the first."""
    if len(paths) == 1:
        specs = checkpoint_specs(Path(paths[0]))
        if len(specs) < 2:
            raise UsageError(f"{paths[0]} is not a training run with two or more scored checkpoints: compare needs "
                             "BASELINE CANDIDATE [...] (or one training run whose checkpoints were scored)")
        paths = specs
    if len(paths) < 2:
        raise UsageError("compare needs at least two run directories: BASELINE CANDIDATE [...]")
    return [load_run(p) for p in paths]


def checkpoint_notes(runs: Sequence[RunLog], rows: list[MetricRow], labels: Sequence[str]) -> list[str]:
    """For checkpoints of one training run: is any checkpoint significantly better than the first on the
    metric that chose the best one? Best-by-value on a handful of samples is often noise."""
    training = runs[0].results.training
    if training is None or training.best is None or len({r.path for r in runs}) != 1 or "/" not in training.best.metric:
        return []
    task, metric = training.best.metric.split("/", 1)
    row = next((r for r in rows if (r.task, r.metric, r.group) == (task, metric, None)), None)
    if row is None:
        return []
    better = [labels[i] for i, t in enumerate(row.tests) if t is not None and t.pvalue < 0.05
              and (t.delta > 0) == row.higher_is_better and t.delta != 0]
    if better:
        return [f"{training.best.metric}: significantly better than {labels[0]} (p < 0.05): {', '.join(better)}"]
    return [f"{training.best.metric}: no checkpoint is significantly better than {labels[0]} (p < 0.05); the best "
            f"by value (step {training.best.step}) may be noise on n={row.estimates[0].n if row.estimates[0] else 0}"]


def run_labels(runs: Sequence[RunLog]) -> list[str]:
    """Short unique names: the model name, or the directory name when models repeat."""
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        names = [r.path.name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{n} [{i}]" for i, n in enumerate(names)]
    return names


# ---------------------------------------------------------------------------- scores
def _values(records: list[SampleRecord], metric: str) -> dict[str, float]:
    """id -> value of the samples that were scored (failed samples and None values are left out)."""
    out: dict[str, float] = {}
    for r in records:
        if r.error is None and r.score is not None:
            v = r.score.values.get(metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[r.sample.id] = float(v)
            elif isinstance(v, bool):
                out[r.sample.id] = float(v)
    return out


def _estimate(stored: Metric | None, values: dict[str, float]) -> stats.Estimate | None:
    """The run's score with its CI: from the per-sample values when they give the stored mean."""
    if values:
        est = stats.score_ci(list(values.values()))
        if stored is None or stored.value is None or math.isclose(est.value, stored.value, abs_tol=1e-9):
            return est
    if stored is None or stored.value is None:
        return None
    lo, hi = stats.normal_ci(stored.value, stored.stderr if stored.stderr is not None else math.nan)
    return stats.Estimate(stored.value, lo, hi, stored.n, "normal")


def group_key(run: RunLog, task: str) -> str | None:
    """The metadata key behind results.json's per-group metrics: stored, or the key whose values match."""
    entry = run.tasks.get(task)
    if entry is None:
        return None
    if entry.group_by:
        return entry.group_by
    groups = set(entry.groups)
    if not groups:
        return None
    records = run.records_for(task)
    keys = {k for r in records for k in r.sample.metadata}
    for key in sorted(keys):
        if {str(r.sample.metadata.get(key)) for r in records} == groups:
            return key
    return None


def _rows_for(runs: Sequence[RunLog], task: str, group: str | None, per_run: list[list[SampleRecord]],
              n_boot: int, seed: int) -> list[MetricRow]:
    """Rows of one task (or one of its groups) given each run's records of it."""

    def stored_metrics(run: RunLog) -> dict[str, Metric]:
        entry = run.tasks.get(task)
        if entry is None:
            return {}
        return entry.groups.get(group, {}) if group is not None else entry.metrics

    metrics = list(dict.fromkeys(m for run in runs for m in stored_metrics(run)))
    clusters = next((e.clusters for run in runs if (e := run.tasks.get(task)) is not None and e.clusters), {})
    rows = []
    for metric in metrics:
        if metric in clusters:
            rows.append(_cluster_row(runs, task, group, metric, clusters[metric], per_run, stored_metrics, n_boot, seed))
            continue
        values = [_values(recs, metric) for recs in per_run]
        estimates = [_estimate(stored_metrics(run).get(metric), v) for run, v in zip(runs, values)]
        tests: list[stats.PairedTest | None] = [None]
        for i in range(1, len(runs)):
            shared = [sid for sid in values[0] if sid in values[i]]
            # the per-sample values are what the stored score was computed from (else: aggregate-only metric)
            consistent = all(e is not None and e.n == len(values[j]) for j, e in ((0, estimates[0]), (i, estimates[i])))
            if shared and consistent:
                tests.append(stats.paired_test([values[0][s] for s in shared], [values[i][s] for s in shared],
                                               n_boot=n_boot, seed=seed))
            else:
                tests.append(None)  # an aggregate-only metric (no per-sample values): no paired test
        declared = next((m for run in runs if (m := stored_metrics(run).get(metric)) is not None), None)
        seen = [v for vals in values for v in vals.values()] or [e.value for e in estimates if e is not None]
        rows.append(MetricRow(task, metric, group, estimates, tests, declared.higher_is_better if declared else True,
                              is_diagnostic(metric), all(0.0 <= v <= 1.0 for v in seen)))
    return rows


def _cluster_row(runs: Sequence[RunLog], task: str, group: str | None, metric: str, keys: list[str],
                 per_run: list[list[SampleRecord]], stored_metrics: Any, n_boot: int, seed: int) -> MetricRow:
    """A mean over clustered sub-items: cluster-bootstrap CIs and a paired cluster test over shared samples."""
    num, den = keys
    parts = [(_values(recs, num), _values(recs, den)) for recs in per_run]
    # a run written before its task recorded the cluster parts keeps its stored score (a normal CI, no test)
    estimates = [stats.ratio_ci([x[s] for s in x if s in w], [w[s] for s in x if s in w], seed=seed) if x
                 else _estimate(stored_metrics(run).get(metric), {}) for run, (x, w) in zip(runs, parts)]
    tests: list[stats.PairedTest | None] = [None]
    for i in range(1, len(runs)):
        (xa, wa), (xb, wb) = parts[0], parts[i]
        shared = [s for s in xa if s in wa and s in xb and s in wb]
        if shared:
            tests.append(stats.paired_cluster_test([xa[s] for s in shared], [wa[s] for s in shared],
                                                   [xb[s] for s in shared], [wb[s] for s in shared], n_boot=n_boot, seed=seed))
            continue
        # a run written before its task recorded the parts: its per-sample score is already the cluster's mean
        # (MT-Bench's per-question turn mean), so the samples pair as clusters of equal weight
        va, vb = _values(per_run[0], metric), _values(per_run[i], metric)
        common = [s for s in va if s in vb]
        tests.append(stats.paired_test([va[s] for s in common], [vb[s] for s in common], n_boot=n_boot, seed=seed)
                     if common else None)
    declared = next((m for run in runs if (m := stored_metrics(run).get(metric)) is not None), None)
    # a rate (IFEval's share of instructions) is in points; a 1-10 rating (MT-Bench's turn mean) is not
    unit = (all(0.0 <= x[s] <= w[s] for x, w in parts for s in x if s in w)
            and all(0.0 <= v <= 1.0 for recs in per_run for v in _values(recs, metric).values()))
    return MetricRow(task, metric, group, estimates, tests, declared.higher_is_better if declared else True,
                     is_diagnostic(metric), unit)


def _changed(runs: Sequence[RunLog], task: str, rows: list[MetricRow]) -> list[ChangedSample]:
    """Samples whose verdict flipped, on the task's 0/1 metrics (all of them, deduplicated per sample)."""
    binary = [r.metric for r in rows if r.group is None and r.tests[1:] and any(
        t is not None and t.method == "mcnemar-exact" for t in r.tests[1:])]
    base = {r.sample.id: r for r in runs[0].records_for(task)}
    out = []
    for i, run in enumerate(runs[1:], start=1):
        for rec in run.records_for(task):
            a = base.get(rec.sample.id)
            if a is None or a.score is None or rec.score is None or a.error or rec.error:
                continue
            for metric in binary:
                va, vb = a.score.values.get(metric), rec.score.values.get(metric)
                if va is None or vb is None or float(va) == float(vb):
                    continue
                out.append(ChangedSample(
                    i, task, rec.sample.id, metric, "lost" if float(va) > float(vb) else "gained",
                    _text(rec.sample.input), _text(rec.sample.target), [_output(a), _output(rec)],
                    [a.score.values, rec.score.values], [_text(a.score.answer), _text(rec.score.answer)]))
                break
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list) and value and isinstance(value[0], dict) and "content" in value[0]:
        return "\n\n".join(f"[{m.get('role')}] {m.get('content')}" for m in value)
    return value if isinstance(value, str) else str(value)


def _output(record: SampleRecord) -> str:
    """Every turn's text (multi-turn tasks have several outputs)."""
    texts = [o.text for o in record.outputs if o.texts]
    return "\n\n---\n\n".join(texts)


def _new_errors(runs: Sequence[RunLog], task: str) -> dict[tuple[int, str], int]:
    failed = [{r.sample.id for r in run.records_for(task) if r.error} for run in runs]
    return {(i, task): len(failed[i] - failed[0]) for i in range(1, len(runs)) if failed[i] - failed[0]}


def _by_task(run: RunLog) -> dict[str, list[SampleRecord]]:
    out: dict[str, list[SampleRecord]] = {}
    for r in run.records:
        out.setdefault(r.task, []).append(r)
    return out


def _by_group(records: list[SampleRecord], key: str) -> dict[str, list[SampleRecord]]:
    out: dict[str, list[SampleRecord]] = {}
    for r in records:
        out.setdefault(str(r.sample.metadata.get(key)), []).append(r)
    return out


def compare(runs: Sequence[RunLog], tasks: Sequence[str] | None = None, allow_mismatch: bool = False,
            n_boot: int = 10_000, seed: int = 0, labels: Sequence[str] | None = None) -> Comparison:
    """Compare every run to the first one; refuse incomparable runs unless `allow_mismatch`."""
    runs = list(runs)
    if len(runs) < 2:
        raise UsageError("compare needs at least two run directories: BASELINE CANDIDATE [...]")
    labels = list(labels) if labels else run_labels(runs)
    tasks, problems, notes = check_runs(runs, labels, tasks)
    if problems and not allow_mismatch:
        raise UsageError("runs are not comparable: " + "; ".join(problems)
                         + " (pass --allow-mismatch to compare the shared samples anyway)")
    if not tasks:
        raise UsageError("the runs share no task to compare")
    warnings = notes + [f"{p} (compared anyway: --allow-mismatch)" for p in problems]
    rows: list[MetricRow] = []
    changed: list[ChangedSample] = []
    new_errors: dict[tuple[int, str], int] = {}
    by_task = [_by_task(run) for run in runs]
    for task in tasks:
        per_run = [b.get(task, []) for b in by_task]
        task_rows = _rows_for(runs, task, None, per_run, n_boot, seed)
        key = group_key(runs[0], task)
        groups = sorted(runs[0].tasks[task].groups) if key else []
        if groups:
            split = [_by_group(recs, key) for recs in per_run]  # type: ignore[arg-type]
            for group in groups:
                task_rows += _rows_for(runs, task, group, [s.get(group, []) for s in split], n_boot, seed)
        rows += task_rows
        changed += _changed(runs, task, task_rows)
        new_errors.update(_new_errors(runs, task))
    for (i, task), n in new_errors.items():
        warnings.append(f"task {task}: {n} sample(s) failed in {labels[i]} but not in {labels[0]}; "
                        "they are left out of the paired tests")
    warnings += checkpoint_notes(runs, rows, labels)
    decontamination: dict[str, list[str]] = {}
    for run, label in zip(runs, labels):
        lines, problem = decontamination_lines(run)
        lines += provenance.summary_lines(run.results, tasks)  # the checkpoint's own training-data check, per task
        if lines:
            decontamination[label] = lines
        if problem:
            warnings.append(problem)
    return Comparison(runs, labels, tasks, rows, changed, warnings, new_errors, decontamination)
