"""IFEval: 541 prompts with 834 verifiable instructions (Zhou et al. 2023, arXiv:2311.07911).

One greedy chat answer per prompt (up to 1280 new tokens, as lm-eval's `ifeval`), checked by the
25 rule-based checkers in `ifeval_checks`, strictly and loosely (loose: also the answer without
its first and/or last line and without `*`). Four metrics, as in the paper:
- prompt_level_{strict,loose}_acc: share of prompts whose every instruction is followed;
- inst_level_{strict,loose}_acc: share of the 834 *instructions* followed (stderr over instructions).
Groups: instruction-level accuracy per instruction id and per category (e.g. `keywords`).
Data: `<data-dir>/ifeval/input_data.jsonl`, or the hub dataset `google/IFEval` without a data dir.
`evalsuite score --outputs` reads the authors' `{"prompt", "response"}` files (matched by prompt
text), `{"key", "response"}`, or `{"id", "output"}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from evalsuite.tasks import ifeval_checks_text
from evalsuite.tasks.ifeval_checks import CHECKERS, check, check_loose

from evalsuite import stats
from evalsuite.data import load_hub, read_jsonl
from evalsuite.errors import DataError
from evalsuite.records import (
    GenerateRequest,
    Output,
    Request,
    Sample,
    SampleRecord,
    Score,
    chat,
)
from evalsuite.task import Task, TaskContext

METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


@dataclass
class IFEval(Task):
    """IFEval: 25 verifiable instruction types, prompt/instruction-level strict and loose accuracy."""

    max_tokens: int = 1280
    hub_path: str = "google/IFEval"
    name: ClassVar[str] = "ifeval"
    version: ClassVar[str] = "1"

    def check_ready(self) -> None:
        """Load the sentence splitter and language profiles before any model runs."""
        ifeval_checks_text.check_ready()

    def load(self, ctx: TaskContext) -> list[Sample]:
        if ctx.data_dir is None:  # the hub copy has every kwarg key in every dict, unused ones None
            rows = load_hub(self.hub_path, split="train")
        else:
            rows = read_jsonl(ctx.data_path("ifeval", "input_data.jsonl", hub_hint=self.hub_path))
        return [_sample(row) for row in rows]

    def requests(self, sample: Sample) -> list[Request]:
        return [GenerateRequest(prompt=chat(str(sample.input)), max_tokens=self.max_tokens, temperature=0.0)]

    def score(self, sample: Sample, outputs: Sequence[Output]) -> Score:
        response = outputs[0].text
        ids, kwargs = sample.metadata["instruction_id_list"], sample.metadata["kwargs"]
        strict = [check(i, kw, response) for i, kw in zip(ids, kwargs)]
        loose = [check_loose(i, kw, response) for i, kw in zip(ids, kwargs)]
        explanation = {}
        for n, (inst, s, lo) in enumerate(zip(ids, strict, loose)):
            key = inst if ids.count(inst) == 1 else f"{inst}#{n + 1}"
            explanation[key] = f"strict {_mark(s.ok)}: {s.detail}; loose {_mark(lo.ok)}: {lo.detail}"
        return Score(
            {
                "prompt_level_strict_acc": float(all(v.ok for v in strict)),
                "prompt_level_loose_acc": float(all(v.ok for v in loose)),
                # per-prompt parts of the instruction-level means: compare and gate test those by prompt
                "inst_level_strict_acc.followed": float(sum(v.ok for v in strict)),
                "inst_level_loose_acc.followed": float(sum(v.ok for v in loose)),
                "inst_level.instructions": float(len(ids)),
            },
            answer={"instruction_id_list": list(ids), "strict": [v.ok for v in strict], "loose": [v.ok for v in loose]},
            explanation=explanation,
        )

    def aggregate(self, records: Sequence[SampleRecord]) -> dict[str, Any]:
        """Prompt-level metrics over prompts; instruction-level ones over instructions."""
        scored = [r for r in records if r.error is None and r.score is not None and r.score.answer]
        prompt = {m: [float(r.score.values[m]) for r in scored] for m in METRICS if m.startswith("prompt")}  # type: ignore[union-attr,arg-type]
        overall = _inst_lists()
        groups: dict[str, dict[str, list[float]]] = {}  # per instruction id and per category
        for r in scored:
            ans = r.score.answer  # type: ignore[union-attr]
            for inst, s, lo in zip(ans["instruction_id_list"], ans["strict"], ans["loose"]):
                category = inst.split(":")[0]
                for lists in (
                    overall,
                    groups.setdefault(inst, _inst_lists()),
                    groups.setdefault(category, _inst_lists()),
                ):
                    lists["inst_level_strict_acc"].append(float(s))
                    lists["inst_level_loose_acc"].append(float(lo))
        values = {**prompt, **overall}
        return {
            "metrics": {m: stats.metric(values[m]) for m in METRICS},
            "groups": {g: {m: stats.metric(v) for m, v in ms.items()} for g, ms in sorted(groups.items())},
            # instructions are clustered in prompts: paired tests resample prompts, not instructions
            "clusters": {m: [f"{m}.followed", "inst_level.instructions"] for m in METRICS if m.startswith("inst")},
        }

    def parse_outputs(self, rows: Iterable[dict[str, Any]], samples: Sequence[Sample] | None = None) -> dict[str, list[str]]:
        """`{"prompt", "response"}` (the authors' files), `{"key", "response"}` or `{"id", "output"}`.

        The authors' files name a prompt by its text: `samples` (the loaded data) map it to its key.
        """
        by_prompt = {str(s.input): s.id for s in samples or ()}
        out: dict[str, list[str]] = {}
        for n, row in enumerate(rows, 1):
            text = row.get("response", row.get("output", row.get("completion")))
            if "key" in row or "id" in row:
                sid: str | None = str(row.get("key", row.get("id")))
            elif "prompt" in row:
                if samples is None:
                    raise DataError("ifeval: outputs that name prompts by text need the task's samples to match them")
                # unknown prompts keep their text as id: the runner reports them as not matching a sample
                sid = by_prompt.get(row["prompt"], row["prompt"])
            else:
                sid = None
            if text is None or sid is None:
                raise DataError(f"ifeval outputs line {n}: needs 'response' (or 'output') and 'prompt', "
                                f"'key' or 'id'; got keys {sorted(row)}")
            out.setdefault(sid, []).append(text)
        return out


def _sample(row: dict[str, Any]) -> Sample:
    ids, kwargs = row["instruction_id_list"], row["kwargs"]
    unknown = [i for i in ids if i not in CHECKERS]
    if unknown or len(ids) != len(kwargs):
        raise DataError(f"ifeval key {row.get('key')}: unknown instruction ids {unknown} or kwargs/ids length mismatch")
    return Sample(
        id=str(row["key"]),
        input=row["prompt"],
        metadata={
            "instruction_id_list": ids,
            "kwargs": [{k: v for k, v in kw.items() if v is not None} for kw in kwargs],
        },
    )


def _inst_lists() -> dict[str, list[float]]:
    return {"inst_level_strict_acc": [], "inst_level_loose_acc": []}


def _mark(ok: bool) -> str:
    return "pass" if ok else "FAIL"


ifeval = IFEval
