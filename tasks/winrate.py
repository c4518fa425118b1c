"""Instruction-following win rate against a baseline run (AlpacaEval-style), on your own prompts.

Prompts come from a JSONL file (`prompts=PATH`, absolute or under the data dir; default the
252 Self-Instruct user-oriented instructions): each line's `instruction` (or `prompt`), plus the
first instance's `input` when there is one. Run the baseline model first without a baseline
(outputs only), then the candidate with `--task-args baseline=RUN_DIR --judge MODEL`: every
prompt is judged pairwise in both orders. Metrics: `win` (the win rate; tie = 0.5),
`inconsistent` (the position-bias rate), `length_diff` (mean characters over the baseline) and
`lc_win_rate` (AlpacaEval 2.0's length-controlled win rate, a logistic fit on the length gap).
The judge is an `evalsuite.judges` plugin by name (`judge_kind`, default `pairwise`).
Judge options: `rubric` (text, or a file when it needs commas), `judge_samples` (median of k; else
the run's `--judge-samples`), `judge_template`, `judge_max_tokens`, `judge_temperature`, `judge_seed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from evalsuite.judges.base import JudgeItem, run_judges
from evalsuite.judges.tasking import (
    LOWER_IS_BETTER,
    judge_kwargs,
    judge_model,
    judgment_values,
    length_control_metrics,
    load_baseline,
    make_judge,
    require_judge,
)

from evalsuite.data import read_jsonl
from evalsuite.errors import DataError, UsageError
from evalsuite.records import (
    GenerateRequest,
    Request,
    Sample,
    SampleRecord,
    Score,
    chat,
)
from evalsuite.task import Task, TaskContext

DEFAULT_PROMPTS = "self_instruct/user_oriented_instructions.jsonl"


@dataclass
class WinRate(Task):
    """AlpacaEval-style pairwise win rate against a baseline run, with length control."""

    prompts: str = DEFAULT_PROMPTS
    baseline: str | None = None
    baseline_task: str = "winrate"
    max_tokens: int = 512
    temperature: float = 0.0
    seed: int | None = None  # sampled answers (temperature > 0); the run's --seed
    length_control: bool = True
    rubric: str | None = None
    judge_kind: str = "pairwise"  # an `evalsuite.judges` plugin that compares two answers
    judge_samples: int | None = None  # None: 1, or the run's --judge-samples
    judge_template: str | None = None
    judge_max_tokens: int = 256
    judge_temperature: float | None = None
    judge_seed: int = 0
    name: ClassVar[str] = "winrate"
    version: ClassVar[str] = "1"
    higher_is_better: ClassVar[dict[str, bool]] = LOWER_IS_BETTER

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise UsageError(f"winrate: temperature must be a number >= 0, got {self.temperature!r}")
        if self.temperature == 0:
            self.seed = None
        self._judge = make_judge(self.judge_kind, True, judge_kwargs(
            self.judge_samples, self.judge_template, self.judge_max_tokens, self.judge_temperature, self.judge_seed,
            self.rubric))

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
        return [GenerateRequest(chat(str(sample.input)), max_tokens=self.max_tokens, temperature=float(self.temperature),
                                seed=self.seed)]

    def score_all(self, records: Sequence[SampleRecord], ctx: TaskContext) -> list[Score]:
        if not self.baseline:  # a baseline run: outputs only, nothing to compare with yet
            return [Score({}, explanation={"note": "no baseline given: outputs only"}) for _ in records]
        client = require_judge(ctx, self.name)
        base = load_baseline(self.baseline, self.baseline_task)
        paired = [(r, base[r.sample.id].outputs[0].text) for r in records if r.sample.id in base]
        items = [JudgeItem([{"question": str(r.sample.input), "answer_a": r.outputs[0].text, "answer_b": b}]) for r, b in paired]
        judgments = iter(run_judges(client, [(self._judge, item) for item in items], f"judging {self.name}"))
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
        out = super().aggregate(records) | judge_model(records)
        pairs = [(s.values["win"], s.values["length_diff"]) for r in records
                 if r.error is None and (s := r.score) is not None and s.values.get("win") is not None]
        if self.length_control:
            out["metrics"].update(length_control_metrics(pairs))
        return out

    def config(self) -> dict[str, Any]:
        return super().config() | {"judge": {"judges": {type(self._judge).__name__: self._judge.describe()}}}


winrate = WinRate
