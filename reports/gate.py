"""Regression gate: rules per task/metric applied to a `Comparison` of baseline and candidate.

A drop only counts as a regression when it is both large (more than `max_drop` absolute, or
`max_drop_relative` of the baseline) and, by default, statistically significant in the paired
test at `alpha`: a few flipped samples are noise, and CI jobs that fail on noise get ignored.
`max_drop: auto` (the default) scales with the metric: 0.01 (1 point) for metrics in [0, 1],
1% of the baseline score for others (MT-Bench's 1-10 `score`, a loss), so one default fits both.
`min_score` / `max_score` are hard floors/ceilings. Metrics without per-sample scores cannot be
tested, so their drop alone decides (and the check says so). Diagnostics (`length_diff`,
`lc_length_coef`, `lc_win_rate`: see `metrics.py`) are gated only by a rule that names them.

A rule with a literal metric name that matches no metric of a compared task is a usage error
(exit 2): a typo in a CI gate must not silently pass. Rules whose task is not in the runs, or whose
metric pattern has wildcards, only warn (one rules file can serve several task sets).

Rules file (YAML):

    defaults: {max_drop: auto, alpha: 0.05, require_significance: true, max_new_errors: 0}
    rules:
      - {task: gsm8k, metric: exact_match_strict, max_drop: 0.02, min_score: 0.3}
      - {task: "mmlu*", metric: acc, group: "*", alpha: 0.01}   # also gate every subject
      - {task: ifeval, metric: "*_loose_acc", ignore: true}
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.reports.compare import Comparison, MetricRow

PASS, FAIL, SKIP = "pass", "fail", "skipped"
AUTO = "auto"
AUTO_DROP = 0.01  # `max_drop: auto`: this much of a [0, 1] metric, this fraction of the baseline otherwise
WILDCARDS = frozenset("*?[")


@dataclass(frozen=True)
class Rule:
    """Thresholds for the metrics a rule matches; None leaves a threshold off."""

    task: str = "*"
    metric: str = "*"
    group: str | None = None  # None: the task-level score; "*" or a pattern: those subtasks (only)
    max_drop: float | str | None = AUTO  # absolute, in the metric's units; "auto": see AUTO_DROP
    max_drop_relative: float | None = None  # fraction of the baseline score, e.g. 0.05
    alpha: float = 0.05
    require_significance: bool = True
    min_score: float | None = None
    max_score: float | None = None
    max_new_errors: int | None = 0  # samples that failed in the candidate only (they hide from the tests)
    higher_is_better: bool | None = None  # None: declared in results.json, else guessed from the metric name
    ignore: bool = False

    def matches(self, row: MetricRow) -> bool:
        if not (fnmatch.fnmatchcase(row.task, self.task) and fnmatch.fnmatchcase(row.metric, self.metric)):
            return False
        if row.diagnostic and self.metric == "*":  # diagnostics are gated only by a rule that names them
            return False
        if row.group is None or self.group is None:  # a rule is for task-level scores or for subtasks
            return row.group is None and self.group is None
        return fnmatch.fnmatchcase(row.group, self.group)


@dataclass
class Rules:
    defaults: Rule = field(default_factory=Rule)
    rules: list[Rule] = field(default_factory=list)

    def for_row(self, row: MetricRow) -> Rule | None:
        """The last matching rule wins (specific rules go below general ones); None: not gated."""
        hits = [r for r in self.rules if r.matches(row)]
        if hits:
            return hits[-1]
        return self.defaults if row.group is None and not row.diagnostic else None

    def unmatched(self, comparison: Comparison) -> tuple[list[str], list[str]]:
        """(errors, warnings) for rules that match no row: literal metric names are typos, patterns may not be."""
        errors, warnings, absent = [], [], []
        for i, rule in enumerate(self.rules):
            if any(rule.matches(row) for row in comparison.rows):
                continue
            what = f"gate rules: rules[{i}] (task {rule.task!r}, metric {rule.metric!r}" + (
                f", group {rule.group!r})" if rule.group is not None else ")")
            tasks = [t for t in comparison.tasks if fnmatch.fnmatchcase(t, rule.task)]
            if not tasks:
                absent.append(f"rules[{i}] (task {rule.task!r})")
                continue
            metrics = sorted({r.metric for r in comparison.rows if r.task in tasks})
            literal = not WILDCARDS & set(rule.metric) and not WILDCARDS & set(rule.group or "")
            message = f"{what} matches no metric of task(s) {', '.join(tasks)}; they have: {', '.join(metrics) or '-'}"
            (errors if literal else warnings).append(message)
        if absent:  # one line: a shared rules file names tasks that a given run does not have
            warnings.append(f"gate rules: {', '.join(absent)} match no task of these runs "
                            f"({', '.join(comparison.tasks)}); check the task names if that is unexpected")
        return errors, warnings


_FIELDS = {f.name for f in fields(Rule)}


def _rule(data: dict[str, Any], base: Rule, where: str) -> Rule:
    if not isinstance(data, dict):
        raise UsageError(f"gate rules: {where} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise UsageError(f"gate rules: unknown key(s) {unknown} in {where}; known: {sorted(_FIELDS)}")
    merged = {f: getattr(base, f) for f in _FIELDS}
    merged.update(data)
    for key in ("task", "metric"):
        merged[key] = str(merged[key])
    if merged["group"] is not None:
        merged["group"] = str(merged["group"])
    _check_types(merged, where)
    return Rule(**merged)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_types(rule: dict[str, Any], where: str) -> None:
    """Every threshold has the type its check needs: a bad value is a usage error, not a crash later."""
    def bad(key: str, expected: str) -> UsageError:
        return UsageError(f"gate rules: {key} must be {expected} in {where}, got {rule[key]!r}")

    alpha = rule["alpha"]
    if not _number(alpha) or not 0 < alpha < 1:
        raise UsageError(f"gate rules: alpha must be between 0 and 1 in {where}, got {alpha!r}")
    if rule["max_drop"] != AUTO and rule["max_drop"] is not None and not (_number(rule["max_drop"])
                                                                          and rule["max_drop"] >= 0):
        raise bad("max_drop", "a number >= 0, 'auto' or null")
    if rule["max_drop_relative"] is not None and not (_number(rule["max_drop_relative"]) and rule["max_drop_relative"] >= 0):
        raise bad("max_drop_relative", "a number >= 0 or null")
    for key in ("min_score", "max_score"):
        if rule[key] is not None and not _number(rule[key]):
            raise bad(key, "a number or null")
    n = rule["max_new_errors"]
    if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        raise bad("max_new_errors", "a whole number >= 0 or null")
    for key in ("require_significance", "ignore"):
        if not isinstance(rule[key], bool):
            raise bad(key, "true or false")
    if rule["higher_is_better"] is not None and not isinstance(rule["higher_is_better"], bool):
        raise bad("higher_is_better", "true, false or null")


def parse_rules(data: dict[str, Any] | None) -> Rules:
    data = data or {}
    if not isinstance(data, dict):
        raise UsageError("gate rules: the file must be a mapping with 'defaults' and/or 'rules'")
    unknown = sorted(set(data) - {"defaults", "rules"})
    if unknown:
        raise UsageError(f"gate rules: unknown top-level key(s) {unknown}; expected 'defaults' and 'rules'")
    defaults = _rule(data.get("defaults") or {}, Rule(), "defaults")
    items = data.get("rules") or []
    if not isinstance(items, list):
        raise UsageError("gate rules: 'rules' must be a list of mappings")
    return Rules(defaults, [_rule(item, defaults, f"rules[{i}]") for i, item in enumerate(items)])


def load_rules(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Rules:
    """Rules from a YAML file (or none), with `overrides` (CLI flags) applied to its defaults."""
    data: Any = {}
    if path is not None:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise UsageError(f"gate rules file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"gate rules file {p} is not valid YAML: {exc}") from exc
    if overrides and isinstance(data, dict):  # before parsing, so the rules inherit them too
        data = {**data, "defaults": {**(data.get("defaults") or {}), **overrides}}
    return parse_rules(data)


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
    warnings: list[str] = field(default_factory=list)  # rules that matched nothing (patterns, absent tasks)

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


def check_row(row: MetricRow, rule: Rule, i: int = 1) -> Check:
    """Apply one rule to run i vs the baseline."""
    a, b = row.estimates[0], row.estimates[i]
    test = row.tests[i]
    check = Check(row.task, row.metric, row.group, PASS, "", a.value if a else None, b.value if b else None,
                  row.delta(i), test.pvalue if test else None)
    if rule.ignore:
        check.status, check.message = SKIP, "ignored by the gate rules"
        return check
    if a is None or b is None:
        check.status, check.message = SKIP, "no score in " + ("the baseline" if a is None else "the candidate")
        return check
    problems: list[str] = []
    if rule.min_score is not None and b.value < rule.min_score:
        problems.append(f"score {b.value:.4f} is below the minimum {rule.min_score}")
    if rule.max_score is not None and b.value > rule.max_score:
        problems.append(f"score {b.value:.4f} is above the maximum {rule.max_score}")
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


def gate(comparison: Comparison, rules: Rules | None = None, candidate: int = 1) -> GateResult:
    """Gate run `candidate` of the comparison against its baseline (run 0)."""
    rules = rules or Rules()
    errors, warnings = rules.unmatched(comparison)
    if errors:
        raise UsageError(errors[0] + (f" (and {len(errors) - 1} more such rule(s))" if len(errors) > 1 else ""))
    checks = []
    for row in comparison.rows:
        rule = rules.for_row(row)
        if rule is not None:
            checks.append(check_row(row, rule, candidate))
    for task in comparison.tasks:
        n = comparison.new_errors.get((candidate, task), 0)
        rule = rules.defaults
        matching = [r for r in rules.rules if fnmatch.fnmatchcase(task, r.task) and r.metric == "*" and r.group is None]
        if matching:
            rule = matching[-1]
        if rule.max_new_errors is None or rule.ignore:
            continue
        ok = n <= rule.max_new_errors
        checks.append(Check(task, "new_errors", None, PASS if ok else FAIL,
                            f"{n} sample(s) failed in the candidate only (allowed: {rule.max_new_errors})"
                            + ("" if ok else "; failed samples are left out of the scores and could hide a regression"),
                            candidate=float(n)))
    return GateResult(comparison, checks, candidate, warnings)
