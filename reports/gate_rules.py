"""The gate's rules file: thresholds per task/metric/group, parsed strictly and matched against both runs.

A rule that matches nothing in either run is a usage error (exit 2): a misspelled task or metric in a
CI gate must never silently pass. Only a rule with wildcards marked `optional: true` may match nothing
(one rules file serving several task sets); `optional` also lets its metrics or tasks be absent from
the candidate, which otherwise fails the gate.

    defaults: {max_drop: auto, alpha: 0.05, require_significance: true, max_new_errors: 0, max_missing: 0,
               max_judge_errors: 0.2}
    rules:
      - {task: gsm8k, metric: exact_match_strict, max_drop: 0.02, min_score: 0.3}
      - {task: "mmlu*", metric: acc, group: "*", alpha: 0.01, optional: true}   # also gate every subject
      - {task: ifeval, metric: "*_loose_acc", ignore: true, optional: true}
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from evalsuite.errors import UsageError

if TYPE_CHECKING:
    from evalsuite.reports.compare import Comparison, MetricRow

AUTO = "auto"
WILDCARDS = frozenset("*?[")


class Target(NamedTuple):
    """What a rule can match: one metric of a task (or of one of its groups) as some run recorded it."""

    task: str
    metric: str
    group: str | None
    diagnostic: bool


@dataclass(frozen=True)
class Rule:
    """Thresholds for the metrics a rule matches; None leaves a threshold off."""

    task: str = "*"
    metric: str = "*"
    group: str | None = None  # None: the task-level score; "*" or a pattern: those subtasks (only)
    max_drop: float | str | None = AUTO  # absolute, in the metric's units; "auto": see gate.AUTO_DROP
    max_drop_relative: float | None = None  # fraction of the baseline score, e.g. 0.05
    alpha: float = 0.05
    require_significance: bool = True
    min_score: float | None = None
    max_score: float | None = None
    max_new_errors: int | None = 0  # samples that failed in the candidate only (they hide from the tests)
    max_missing: int | None = 0  # samples without an output in the candidate (`score --allow-missing`)
    max_judge_errors: float | None = 0.2  # rate of samples the judge failed on, in either run
    higher_is_better: bool | None = None  # None: the direction results.json records for the metric
    optional: bool = False  # may match nothing (patterns only); its metrics/tasks may be absent from the candidate
    ignore: bool = False

    def covers(self, task: str, metric: str, group: str | None, diagnostic: bool = False) -> bool:
        if not (fnmatch.fnmatchcase(task, self.task) and fnmatch.fnmatchcase(metric, self.metric)):
            return False
        if diagnostic and self.metric == "*":  # diagnostics are gated only by a rule that names them
            return False
        if group is None or self.group is None:  # a rule is for task-level scores or for subtasks
            return group is None and self.group is None
        return fnmatch.fnmatchcase(group, self.group)

    def matches(self, row: MetricRow) -> bool:
        return self.covers(row.task, row.metric, row.group, row.diagnostic)

    @property
    def task_level(self) -> bool:
        """A rule for whole tasks (every metric, no group): it sets the per-task checks' limits too."""
        return self.metric == "*" and self.group is None


def targets(comparison: Comparison) -> list[Target]:
    """Every task/metric/group that either run recorded (also tasks that only one run has)."""
    from evalsuite.reports.metrics import is_diagnostic

    out: dict[Target, None] = {}
    for run in comparison.runs:
        for task, entry in run.tasks.items():
            for metric in entry.metrics:
                out[Target(task, metric, None, is_diagnostic(metric))] = None
            for group, metrics in entry.groups.items():
                for metric in metrics:
                    out[Target(task, metric, group, is_diagnostic(metric))] = None
    return list(out)


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

    def for_task(self, task: str) -> Rule:
        """The rule for a task as a whole (new errors, missing outputs, a task absent from the candidate)."""
        hits = [r for r in self.rules if r.task_level and fnmatch.fnmatchcase(task, r.task)]
        return hits[-1] if hits else self.defaults

    def unmatched(self, comparison: Comparison) -> tuple[list[str], list[str]]:
        """(errors, warnings) for rules that match nothing in either run: only optional patterns may."""
        errors, warnings = [], []
        found = targets(comparison)
        tasks = list(dict.fromkeys(t for run in comparison.runs for t in run.tasks))
        for i, rule in enumerate(self.rules):
            hit_tasks = [t for t in tasks if fnmatch.fnmatchcase(t, rule.task)]
            if any(rule.covers(*t) for t in found) or (hit_tasks and rule.task_level):
                continue
            what = f"gate rules: rules[{i}] (task {rule.task!r}, metric {rule.metric!r}" + (
                f", group {rule.group!r})" if rule.group is not None else ")")
            if hit_tasks and (diagnostic := _diagnostic_named(rule.metric)):
                errors.append(f"{what} matches no metric of task(s) {', '.join(hit_tasks)}: there {diagnostic} is a "
                              "behaviour diagnostic (results.json `diagnostics`), which compare shows and the gate "
                              "never gates: remove the rule, or name a task that has such a metric")
                continue
            if not hit_tasks:  # literal: the part that matched nothing names one thing, so it is a typo
                literal = not WILDCARDS & set(rule.task)
                message = f"{what} matches no task of these runs; they have: {', '.join(tasks) or '-'}"
            else:
                literal = not WILDCARDS & set(rule.metric + (rule.group or ""))
                kind = "metric" if rule.group is None else "group metric"
                metrics = sorted({t.metric for t in found
                                  if t.task in hit_tasks and (t.group is None) == (rule.group is None)})
                message = (f"{what} matches no {kind} of task(s) {', '.join(hit_tasks)}; "
                           f"they have: {', '.join(metrics) or '-'}")
            if rule.optional and not literal:
                warnings.append(message + " (optional)")
            else:
                fix = ("fix the name" if literal
                       else "fix the pattern, or mark the rule `optional: true` if it is meant to match nothing here")
                errors.append(f"{message}: {fix}")
        return errors, warnings


def _diagnostic_named(metric: str) -> str | None:
    """The behaviour diagnostic a rule's metric names (`mean_tokens` or `diagnostics.mean_tokens`), if any."""
    from evalsuite.diagnostics import NAMES

    name = metric.removeprefix("diagnostics.")
    return name if name in NAMES else None


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
    if where == "defaults" and "optional" in data:  # a blanket "anything may be absent" would hide every typo
        raise UsageError("gate rules: optional is set per rule (rules[i]), not in defaults")
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
    for key in ("max_drop_relative", "max_judge_errors"):
        if rule[key] is not None and not (_number(rule[key]) and rule[key] >= 0):
            raise bad(key, "a number >= 0 or null")
    for key in ("min_score", "max_score"):
        if rule[key] is not None and not _number(rule[key]):
            raise bad(key, "a number or null")
    for key in ("max_new_errors", "max_missing"):
        n = rule[key]
        if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
            raise bad(key, "a whole number >= 0 or null")
    for key in ("require_significance", "ignore", "optional"):
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
