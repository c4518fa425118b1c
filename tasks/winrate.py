"""Instruction-following win rate against a baseline run (AlpacaEval-style), on your own prompts.

Prompts come from a JSONL file (`prompts=PATH`, absolute or under the data dir; default the
252 Self-Instruct user-oriented instructions): each line's `instruction` (or `prompt`), plus the
first instance's `input` when there is one. Run the baseline model first without a baseline
(outputs only), then the candidate with `--task-args baseline=RUN_DIR --judge MODEL`: every
prompt is judged pairwise in both orders. Metrics: `win` (the win rate; tie = 0.5),
`inconsistent` (the position-bias rate), `length_diff` (mean characters over the baseline) and
`lc_win_rate` (AlpacaEval 2.0's length-controlled win rate, a logistic fit on the length gap).
Judge options: `rubric` (text, or a file when it needs commas), `judge_samples` (median of k; else
the run's `--judge-samples`), `judge_template`, `judge_max_tokens`, `judge_temperature`, `judge_seed`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalsuite.judges.base import JudgeItem
from evalsuite.judges.pairwise import PairwiseJudge
from evalsuite.judges.tasking import (
    apply_judge_samples,
    judge_info,
    judge_kwargs,
    judgment_values,
    length_control_metrics,
    load_baseline,
    require_judge,
)

from evalsuite.data import read_jsonl
from evalsuite.errors import DataError
from evalsuite.records import (
    GenerateRequest,
    Request,
    Sample,
    SampleRecord,
    Score,
    chat,
)
from evalsuite.registry import task
from evalsuite.task import Task, TaskContext

DEFAULT_PROMPTS = "self_instruct/user_oriented_instructions.jsonl"


class WinRate(Task):
    name = "winrate"
    version = "1"

    def __init__(self, prompts: str = DEFAULT_PROMPTS, baseline: str | None = None, baseline_task: str = "winrate",
                 max_tokens: int = 512, temperature: float = 0.0, length_control: bool = True, rubric: str | None = None,
                 judge_samples: int | None = None, judge_template: str | None = None, judge_max_tokens: int = 256,
                 judge_temperature: float | None = None, judge_seed: int = 0) -> None:
        self.prompts, self.baseline, self.baseline_task = prompts, baseline, baseline_task
        self.max_tokens, self.temperature, self.length_control = max_tokens, temperature, length_control
        self._judge_samples = judge_samples  # None: 1, or the run's --judge-samples
        self._judge = PairwiseJudge(**judge_kwargs(judge_samples, judge_template, judge_max_tokens, judge_temperature,
                                                   judge_seed, rubric))
        self._judge_info: dict[str, Any] | None = None

    def load(self, ctx: TaskContext) -> list[Sample]:
        path = Path(self.prompts).expanduser()
        if not path.is_absolute():
            path = ctx.data_path(*path.parts)
        elif not path.is_file():
            raise DataError(f"prompts file not found: {path}")
        return [self._sample(i, row, path) for i, row in enumerate(read_jsonl(path))]

    @staticmethod
    def _sample(i: int, row: dict[str, Any], path: Path) -> Sample:
        instruction = row.get("instruction") or row.get("prompt")
        if not instruction:
            raise DataError(f"{path} line {i + 1}: needs an 'instruction' or 'prompt' field, got {sorted(row)}")
        first = (row.get("instances") or [{}])[0]
        extra = first.get("input") or row.get("input") or ""
        text = f"{instruction}\n\n{extra}" if extra else instruction
        meta = {k: row[k] for k in ("motivation_app", "category", "dataset") if k in row}
        return Sample(id=str(row.get("id", i)), input=text, target=first.get("output") or row.get("output"), metadata=meta)

    def requests(self, sample: Sample) -> list[Request]:
        return [GenerateRequest(chat(str(sample.input)), max_tokens=self.max_tokens, temperature=self.temperature)]

    def score_all(self, records: Sequence[SampleRecord], ctx: TaskContext) -> list[Score]:
        apply_judge_samples([self._judge], self._judge_samples, ctx)
        if not self.baseline:  # a baseline run: outputs only, nothing to compare with yet
            return [Score({}, explanation={"note": "no baseline given: outputs only"}) for _ in records]
        client = require_judge(ctx, self.name)
        base = load_baseline(self.baseline, self.baseline_task)
        paired = [(r, base[r.sample.id].outputs[0].text) for r in records if r.sample.id in base]
        items = [JudgeItem([{"question": str(r.sample.input), "answer_a": r.outputs[0].text, "answer_b": b}]) for r, b in paired]
        judgments = iter(self._judge.judge(client, items, f"judging {self.name}"))
        self._judge_info = judge_info(client, [self._judge])
        scores = []
        baseline_text = {r.sample.id: b for r, b in paired}
        for r in records:
            if r.sample.id not in baseline_text:
                scores.append(Score({"win": None, "judge_error": 1.0}, explanation={"error": "not in the baseline run"}))
                continue
            values, explanation = judgment_values("win", next(judgments))
            values = {k.removeprefix("win."): v for k, v in values.items()}
            values["judge_error"] = float(values["win"] is None)
            values["length_diff"] = float(len(r.outputs[0].text) - len(baseline_text[r.sample.id]))
            scores.append(Score(values, answer=values["win"], explanation=explanation))
        return scores

    def aggregate(self, records: Sequence[SampleRecord]) -> dict[str, Any]:
        out = super().aggregate(records)
        pairs = [(s.values["win"], s.values["length_diff"]) for r in records
                 if r.error is None and (s := r.score) is not None and s.values.get("win") is not None]
        if self.length_control:
            out["metrics"].update(length_control_metrics(pairs))
        return out

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["judge"] = self._judge_info or {"judges": {"PairwiseJudge": self._judge.describe()}}
        return json.loads(json.dumps(cfg, default=str))


@task("winrate", "AlpacaEval-style pairwise win rate against a baseline run, with length control")
def winrate(**kwargs: Any) -> WinRate:
    return WinRate(**kwargs)
