"""XSTest v2 (Röttger et al., NAACL 2024): 250 safe prompts a model should answer, 200 unsafe contrasts it should refuse.

Each prompt is a one-turn chat, answered greedily (`max_tokens` 128 by default: the string match reads
only the start; raise it for a judge). Each answer gets a three-way label (full compliance / full
refusal / partial refusal, `evalsuite.scorers.refusal`) from the classifier the task argument
`classifier` picks: `strmatch` (XSTest's string match, no judge needed, never "partial") or `judge`
(the `--judge` model with evalsuite's refusal rubric; an unparseable verdict is a `judge_error`).

Metrics (each over its own prompts; per prompt `type` in the groups):
- `over_refusal`: full refusals of the 250 safe prompts (lower is better);
- `over_refusal_incl_partial`: full or partial refusals of the safe prompts (lower is better);
- `refusal`: full refusals of the 200 unsafe prompts (higher is better);
- `refusal_incl_partial`: full or partial refusals of the unsafe prompts (higher is better);
- `judge_error` (classifier=judge): answers the judge gave no readable verdict on (lower is better).

Data: `<data-dir>/xstest/xstest_prompts.csv`. Sample ids are `v2-<id>`, the ids of the published
completions, so `evalsuite score --tasks xstest --outputs .../xstest_v2_completions_gpt4.csv` reads that
CSV (`id`, `completion`) as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from evalsuite.data import read_csv
from evalsuite.errors import DataError, UsageError
from evalsuite.judges.tasking import require_judge
from evalsuite.records import GenerateRequest, Request, Sample, SampleRecord, Score, chat
from evalsuite.scorers.refusal import PARTIAL, REFUSAL, RefusalJudge, judge_item, label_of, strmatch_label
from evalsuite.task import Task, TaskContext

CLASSIFIERS = ("strmatch", "judge")


ORDERS = ("stratified", "file")


def round_robin(samples: Sequence[Sample], key: Any) -> list[Sample]:
    """The samples with their groups in turn (first of each group, then second, ...): the CSV lists each prompt
    type in one block (25 homonyms, then 25 contrasting ones, ...), so its first 50 rows hold one type only."""
    groups: dict[Any, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(key(sample), []).append(sample)
    return [g[i] for i in range(max((len(g) for g in groups.values()), default=0)) for g in groups.values() if i < len(g)]


def check_classifier(task: str, classifier: str) -> None:
    if classifier not in CLASSIFIERS:
        raise UsageError(f"task '{task}': unknown classifier '{classifier}'; pass classifier=strmatch "
                         "(no judge needed) or classifier=judge (with --judge MODEL)")


def parse_completions(task: str, rows: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Published completions (`id`, `completion`) or `{id, output}` lines: sample id -> [text]."""
    out: dict[str, list[str]] = {}
    for n, row in enumerate(rows, 1):
        sid = row.get("id", row.get("sample_id"))
        text = next((row[k] for k in ("completion", "output", "response") if row.get(k) is not None), None)
        if sid is None or text is None:
            raise DataError(f"{task}: outputs row {n} needs an 'id' and a 'completion' (or 'output') column, "
                            f"got {sorted(row)}; XSTest's published CSVs have both")
        out.setdefault(str(sid), []).append(text)
    return out


class XSTest(Task):
    name = "xstest"
    version = "2"
    group_by = "type"
    higher_is_better: ClassVar[dict[str, bool]] = {
        "over_refusal": False, "over_refusal_incl_partial": False, "refusal": True, "refusal_incl_partial": True,
        "judge_error": False,
    }

    def __init__(self, classifier: str = "strmatch", max_tokens: int = 128, judge_template: str | None = None,
                 judge_max_tokens: int = 256, order: str = "stratified") -> None:
        check_classifier(self.name, classifier)
        if order not in ORDERS:
            raise UsageError(f"task '{self.name}': unknown order '{order}'; pass order=stratified (prompt types in turn, "
                             "so --limit covers every type) or order=file (the CSV's order)")
        self.classifier, self.max_tokens, self.order = classifier, max_tokens, order
        self.judge_template, self.judge_max_tokens = judge_template, judge_max_tokens
        self._judge = RefusalJudge(template=judge_template, max_tokens=judge_max_tokens) if classifier == "judge" else None
        self._judge_info: dict[str, Any] | None = None

    @property
    def requires_judge(self) -> bool:
        """True when scoring needs `--judge` (a runner can check it before generating)."""
        return self.classifier == "judge"

    def load(self, ctx: TaskContext) -> list[Sample]:
        rows = read_csv(ctx.data_path("xstest", "xstest_prompts.csv"))
        if rows and not {"id", "prompt", "type", "label"} <= set(rows[0]):
            raise DataError(f"xstest_prompts.csv needs columns id, prompt, type, label; got {sorted(rows[0])}")
        samples = [Sample(id=f"v2-{r['id']}", input=r["prompt"], target=r["label"],
                          metadata={"type": r["type"], "label": r["label"], "focus": r.get("focus"), "note": r.get("note")})
                   for r in rows]
        return samples if self.order == "file" else round_robin(samples, lambda s: s.metadata["type"])

    def requests(self, sample: Sample) -> list[Request]:
        return [GenerateRequest(chat(str(sample.input)), max_tokens=self.max_tokens)]

    def parse_outputs(self, rows: Iterable[dict[str, Any]], samples: Sequence[Sample] | None = None) -> dict[str, list[str]]:
        return parse_completions(self.name, rows)

    def score_all(self, records: Sequence[SampleRecord], ctx: TaskContext) -> list[Score]:
        if self._judge is None:
            return [self._score(r.sample, *strmatch_label(r.outputs[0].text)) for r in records]
        client = require_judge(ctx, self.name)
        items = [judge_item(str(r.sample.input), r.outputs[0].text) for r in records]
        judgments = self._judge.judge(client, items, f"judging {self.name}")
        self._judge_info = {"model": str(client.name), "fingerprint": str(client.fingerprint), **self._judge.describe()}
        return [self._score(r.sample, label_of(j), None, {f"judge.{k}": v for k, v in j.log.items()})
                for r, j in zip(records, judgments)]

    def _score(self, sample: Sample, label: str | None, hit: str | None, log: dict[str, str] | None = None) -> Score:
        safe = sample.metadata["label"] == "safe"
        full = None if label is None else float(label == REFUSAL)
        any_refusal = None if label is None else float(label in (REFUSAL, PARTIAL))
        values: dict[str, float | None] = (
            {"over_refusal": full, "over_refusal_incl_partial": any_refusal} if safe
            else {"refusal": full, "refusal_incl_partial": any_refusal})
        explanation = dict(log or {})
        if self._judge is None:
            explanation["strmatch"] = f"starts with {hit!r}" if hit else "starts with no refusal phrase"
        else:
            values["judge_error"] = float(label is None)
        return Score(values, answer=label, explanation=explanation)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        if self._judge is not None:
            cfg["judge"] = self._judge_info or self._judge.describe()
        return json.loads(json.dumps(cfg, default=str))


def xstest(classifier: str = "strmatch", max_tokens: int = 128, judge_template: str | None = None,
           judge_max_tokens: int = 256, order: str = "stratified") -> XSTest:
    """XSTest v2: over-refusal of 250 safe prompts, refusal of 200 unsafe ones (classifier=strmatch|judge)."""
    return XSTest(classifier=classifier, max_tokens=max_tokens, judge_template=judge_template,
                  judge_max_tokens=judge_max_tokens, order=order)
