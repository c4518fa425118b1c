"""Regression gate: rules per task/metric applied to a `Comparison` of baseline and candidate.

A drop only counts as a regression when it is both large (more than `max_drop` absolute, or
`max_drop_relative` of the baseline) and, by default, statistically significant in the paired
test at `alpha`: a few flipped samples are noise, and CI jobs that fail on noise get ignored.
`max_drop: auto` (the default) scales with the metric: 0.01 (1 point) for metrics in [0, 1],
1% of the baseline score for others (MT-Bench's 1-10 `score`, a loss), so one default fits both.
Which way is better is what results.json records for each metric (a rule's `higher_is_better`
overrides it). `min_score` / `max_score` are hard floors/ceilings. Metrics without per-sample
scores cannot be tested, so their drop alone decides (and the check says so). Diagnostics
(`length_diff`, `lc_length_coef`, `lc_win_rate`: see `metrics.py`) are gated only by a rule that names them.

Nothing passes by omission: a metric or a task of the baseline that the candidate lacks fails
(unless its rule says `optional: true`), samples without an output fail past `max_missing`, a
judge that failed on more than `max_judge_errors` of a run's samples fails, and a rule that
matches nothing is a usage error (see `gate_rules.py`). For every tested metric the gate also says
the smallest drop its paired test could detect (`detectable_drop`), so a small eval is not
mistaken for a safe one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from evalsuite.errors import UsageError
from evalsuite.reports.compare import Comparison, MetricRow
from evalsuite.reports.gate_rules import AUTO, Rule, Rules, load_rules, parse_rules
from evalsuite.stats import PairedTest

__all__ = ["AUTO", "FAIL", "PASS", "SKIP", "Check", "GateResult", "Rule", "Rules", "check_row", "detectable_drop",
           "gate", "load_rules", "min_flips", "parse_rules"]

PASS, FAIL, SKIP = "pass", "fail", "skipped"
AUTO_DROP = 0.01  # `max_drop: auto`: this much of a [0, 1] metric, this fraction of the baseline otherwise
JUDGE_ERROR = "judge_error"  # the per-sample "the judge gave no verdict" metric of the LLM-as-judge tasks
POWER = 0.8  # the power at which `detectable_drop` is computed
CI_CONFIDENCE = 0.95  # the confidence of compare's paired CIs, from which the standard error is read


# ---------------------------------------------------------------------------- checking
@dataclass
class Check:
    """One gated task/metric (one JUnit test case)."""

    task: str
    metric: str
    group: str | None
    status: str  # pass | fail | skipped
    message: str
    baseline: float | None = None
    candidate: float | None = None
    delta: float | None = None
    pvalue: float | None = None

    @property
    def name(self) -> str:
        return f"{self.task}/{self.group}" if self.group else self.task


@dataclass
class GateResult:
    comparison: Comparison
    checks: list[Check]
    candidate: int = 1  # index of the candidate run in the comparison
    warnings: list[str] = field(default_factory=list)  # optional rules that matched nothing
    notes: list[str] = field(default_factory=list)  # one line per task: the smallest drop its tests can detect

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def _fmt(v: float | None, points: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v * 100:+.2f} pts" if points else f"{v:.4f}"


def allowed_drops(rule: Rule, row: MetricRow, baseline: float) -> list[float]:
    """The drop limits in the metric's units; `auto` is 1 point of a [0, 1] metric, else 1% of the baseline."""
    absolute = rule.max_drop
    if absolute == AUTO:
        absolute = AUTO_DROP if row.unit_interval else AUTO_DROP * abs(baseline)
    relative = None if rule.max_drop_relative is None else rule.max_drop_relative * abs(baseline)
    return [float(x) for x in (absolute, relative) if x is not None]


def _limits(rule: Rule, value: float) -> list[str]:
    problems = []
    if rule.min_score is not None and value < rule.min_score:
        problems.append(f"score {value:.4f} is below the minimum {rule.min_score}")
    if rule.max_score is not None and value > rule.max_score:
        problems.append(f"score {value:.4f} is above the maximum {rule.max_score}")
    return problems


def check_row(row: MetricRow, rule: Rule, i: int = 1) -> Check:
    """Apply one rule to run i vs the baseline."""
    a, b = row.estimates[0], row.estimates[i]
    test = row.tests[i]
    check = Check(row.task, row.metric, row.group, PASS, "", a.value if a else None, b.value if b else None,
                  row.delta(i), test.pvalue if test else None)
    if rule.ignore:
        check.status, check.message = SKIP, "ignored by the gate rules"
        return check
    if b is None:  # a metric that disappears must not pass by omission
        if a is None:
            check.status, check.message = SKIP, "no score in either run"
        elif rule.optional:
            check.status, check.message = SKIP, "no score in the candidate (the rule marks it optional)"
        else:
            check.status = FAIL
            check.message = (f"no score in the candidate (the baseline has {a.value:.4f}); mark the rule "
                             "`optional: true` if the metric may be absent")
        return check
    problems = _limits(rule, b.value)
    if a is None:  # new in the candidate: nothing to compare, the hard limits still apply
        check.status = FAIL if problems else SKIP
        check.message = "; ".join(problems) or "no score in the baseline: only min_score/max_score apply"
        return check
    if row.diagnostic and rule.higher_is_better is None:  # no better or worse: only the hard limits apply
        check.status = FAIL if problems else PASS
        check.message = "; ".join(problems) or (f"diagnostic, no direction (set higher_is_better to gate drops); "
                                                f"delta {_fmt(row.delta(i))}")
        return check
    higher = row.higher_is_better if rule.higher_is_better is None else rule.higher_is_better
    drop = (a.value - b.value) if higher else (b.value - a.value)
    limits = allowed_drops(rule, row, a.value)
    big = bool(limits) and drop > min(limits) + 1e-12
    significant = test is not None and math.isfinite(test.pvalue) and test.pvalue < rule.alpha
    where = "dropped" if higher else "rose"
    amount = f"{abs(drop):.4f}" + (f" ({abs(drop) * 100:.2f} pts)" if row.unit_interval else "")
    if big and (significant or not rule.require_significance):
        p = f", p={test.pvalue:.3g} < alpha={rule.alpha}" if test else ""
        problems.append(f"{where} by {amount}, over the allowed {min(limits):.4f}{p}")
    elif big and test is None:
        problems.append(f"{where} by {amount}, over the allowed {min(limits):.4f} "
                        "(no per-sample scores: no significance test possible)")
    if problems:
        check.status, check.message = FAIL, "; ".join(problems)
    elif big:
        check.message = f"{where} by {amount} but not significant (p={test.pvalue:.3g} >= alpha={rule.alpha}): noise"
    else:
        p = f", p={test.pvalue:.3g}" if test else ""
        check.message = f"delta {_fmt(row.delta(i), points=row.unit_interval)}{p}"
    return check


# ---------------------------------------------------------------------------- per-task checks
def _ids(ids: Sequence[str], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _new_errors(comparison: Comparison, task: str, rule: Rule, i: int) -> Check | None:
    if rule.max_new_errors is None or rule.ignore:
        return None
    n = comparison.new_errors.get((i, task), 0)
    ok = n <= rule.max_new_errors
    return Check(task, "new_errors", None, PASS if ok else FAIL,
                 f"{n} sample(s) failed in the candidate only (allowed: {rule.max_new_errors})"
                 + ("" if ok else "; failed samples are left out of the scores and could hide a regression"),
                 candidate=float(n))


def _missing_outputs(comparison: Comparison, task: str, rule: Rule, i: int) -> Check | None:
    """Samples `evalsuite score --allow-missing` found no output for: shown whenever a run has some."""
    base, cand = (comparison.runs[j].tasks.get(task) for j in (0, i))
    ids = list(cand.missing) if cand else []
    base_n = len(base.missing) if base else 0
    if rule.max_missing is None or rule.ignore or not (ids or base_n):
        return None
    ok = len(ids) <= rule.max_missing
    message = (f"{len(ids)} sample(s) have no output in the candidate" + (f" ({_ids(ids)})" if ids else "")
               + f" (allowed: {rule.max_missing})" + (f"; the baseline has {base_n} without output" if base_n else ""))
    if not ok:
        message += "; they are not scored, so the scores leave them out"
    return Check(task, "missing_outputs", None, PASS if ok else FAIL, message,
                 baseline=float(base_n), candidate=float(len(ids)))


def _judge_errors(comparison: Comparison, task: str, rules: Rules, i: int) -> Check | None:
    """A broken judge (unreachable, unparsable verdicts) makes every judged score meaningless, in either run."""
    row = comparison.find(task, JUDGE_ERROR)
    rule = (rules.for_row(row) if row is not None else None) or rules.for_task(task)
    limit = rule.max_judge_errors
    rates: dict[str, float | None] = {}
    for j, label in ((0, "baseline"), (i, "candidate")):
        entry = comparison.runs[j].tasks.get(task)
        m = entry.metrics.get(JUDGE_ERROR) if entry else None
        rates[label] = m.value if m is not None else None
    if limit is None or all(r is None for r in rates.values()):
        return None
    bad = {label: r for label, r in rates.items() if r is not None and r > limit + 1e-12}
    if bad:
        message = (f"the judge failed on {' and '.join(f'{r:.1%} of the {label} samples' for label, r in bad.items())} "
                   f"(max_judge_errors {limit:g}): its scores cannot be trusted; check the judge model and its server")
    else:
        shown = ", ".join(f"{label} {r:.1%}" for label, r in rates.items() if r is not None)
        message = f"judge errors: {shown} of samples (allowed: {limit:g})"
    return Check(task, "judge_errors", None, FAIL if bad else PASS, message,
                 baseline=rates["baseline"], candidate=rates["candidate"])


def _absent_tasks(comparison: Comparison, rules: Rules, i: int, tasks: Sequence[str] | None) -> list[Check]:
    """The baseline's tasks that the candidate has no results for (compared with --allow-mismatch)."""
    base, cand = comparison.runs[0], comparison.runs[i]
    if tasks is None:
        shared = [t for t in base.tasks if all(t in r.tasks for r in comparison.runs)]
        restricted = set(comparison.tasks) != set(shared)  # compare was given a task list: the rest is not gated
        tasks = comparison.tasks if restricted else list(base.tasks)
    checks = []
    for task in tasks:
        if task in cand.tasks or task not in base.tasks:
            continue
        rule = rules.for_task(task)
        if rule.ignore or rule.optional:
            checks.append(Check(task, "task", None, SKIP, "not in the candidate (the rules make it optional)"))
        else:
            checks.append(Check(task, "task", None, FAIL, "in the baseline but not in the candidate, so none of its "
                                "metrics were gated; run it, or mark its rule `optional: true`"))
    return checks


# ---------------------------------------------------------------------------- sensitivity
def _z(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def min_flips(alpha: float) -> int:
    """The fewest one-way flips McNemar's exact test calls significant: 2 * 0.5**k < alpha."""
    k = 1
    while 2 * 0.5**k >= alpha:
        k += 1
    return k


def detectable_drop(test: PairedTest, alpha: float, power: float = POWER) -> float | None:
    """The smallest drop the paired test detects with `power` at `alpha` (normal approximation).

    (z[1 - alpha/2] + z[power]) times the standard error of the paired delta, read from its 95% CI;
    for 0/1 scores at least `min_flips(alpha) / n`, as McNemar's exact test needs that many flips.
    None when the comparison tells nothing (no variance in the differences of continuous scores).
    """
    if test.n == 0 or not (math.isfinite(test.lo) and math.isfinite(test.hi)):
        return None
    se = (test.hi - test.lo) / (2 * _z(0.5 + CI_CONFIDENCE / 2))
    mde = (_z(1 - alpha / 2) + _z(power)) * se
    if test.method == "mcnemar-exact":
        mde = max(mde, min_flips(alpha) / test.n)
    return mde if mde > 0 else None


def _sensitivity(task: str, gated: list[tuple[MetricRow, Rule]], i: int) -> str | None:
    """'qa: with n=400 a drop under 4.1 pts in acc cannot be told from noise (alpha=0.05, 80% power)'."""
    parts, ns, alphas = [], set(), set()
    for row, rule in gated:
        test = row.tests[i]
        mde = detectable_drop(test, rule.alpha) if test is not None else None
        if mde is None:
            continue
        parts.append((f"{mde * 100:.1f} pts" if row.unit_interval else f"{mde:.3g}") + f" in {row.metric}")
        ns.add(test.n)
        alphas.add(rule.alpha)
    if not parts:
        return None
    n = str(min(ns)) if len(ns) == 1 else f"{min(ns)}-{max(ns)}"
    alpha = f"alpha={alphas.pop():g}" if len(alphas) == 1 else "each rule's alpha"
    return (f"{task}: with n={n} a drop under {', '.join(parts)} cannot be told from noise "
            f"({alpha}, {POWER:.0%} power)")


def gate(comparison: Comparison, rules: Rules | None = None, candidate: int = 1,
         tasks: Sequence[str] | None = None) -> GateResult:
    """Gate run `candidate` of the comparison against its baseline (run 0).

    `tasks`: the task list the comparison was restricted to (`--tasks`), if any; the baseline's other
    tasks are then not required of the candidate. Without it a restricted comparison is recognised.
    """
    rules = rules or Rules()
    errors, warnings = rules.unmatched(comparison)
    if errors:
        raise UsageError(errors[0] + (f" (and {len(errors) - 1} more such rule(s))" if len(errors) > 1 else ""))
    checks: list[Check] = []
    gated: dict[str, list[tuple[MetricRow, Rule]]] = {}
    for row in comparison.rows:
        rule = rules.for_row(row)
        if rule is None:
            continue
        check = check_row(row, rule, candidate)
        checks.append(check)
        if row.group is None and check.status != SKIP:
            gated.setdefault(row.task, []).append((row, rule))
    for task in comparison.tasks:
        rule = rules.for_task(task)
        for extra in (_new_errors(comparison, task, rule, candidate),
                      _missing_outputs(comparison, task, rule, candidate),
                      _judge_errors(comparison, task, rules, candidate)):
            if extra is not None:
                checks.append(extra)
    checks += _absent_tasks(comparison, rules, candidate, tasks)
    notes = [line for task in comparison.tasks if (line := _sensitivity(task, gated.get(task, []), candidate))]
    return GateResult(comparison, checks, candidate, warnings, notes)
