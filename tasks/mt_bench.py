"""MT-Bench (Zheng et al. 2023): 80 two-turn questions in 8 categories, graded by an LLM judge.

The model answers turn 1, then turn 2 with its own first answer in the chat history
(`next_requests`). Each turn is judged separately, FastChat-style: math, reasoning and coding
against GPT-4's reference answers (`reference_answer/gpt-4.jsonl`, else the question's own
`reference`), the rest on a rubric. Modes:
- `single` (default): a 1-10 rating per turn; `score` is the mean over judged turns (FastChat's
  number; per category via `group_by`), counting questions whose every turn was judged.
- `pairwise`: each turn against the same question's answers in a baseline run
  (`--task-args mode=pairwise,baseline=RUN_DIR`), both orders; `win` for the model (tie = 0.5),
  `inconsistent` (position bias), `length_diff` (characters over the baseline, mean of the turns)
  and `lc_win_rate` (length-controlled win rate over the judged turns; `length_control=false` skips it).
`score` and `win` are means over turns, which are clustered in questions: each sample records its
turns' sum and count (`score.sum`, `score.turns`), the task declares them under `clusters`, and
compare and gate resample questions, not turns (a question's two turns are not independent).
Answers are greedy by default; `temperature=fastchat` samples per category as FastChat does
(writing/roleplay 0.7, stem/humanities 0.1, the rest greedy) with the run's seed.
Judges are `evalsuite.judges` plugins by name: `judge_kind` (default `single`, or `pairwise` in
pairwise mode) and `judge_reference_kind` (default `reference`).
Judge options: `rubric` (what counts, as text or a file when it needs commas), `judge_samples`
(median of k; else the run's `--judge-samples`), `judge_template` / `judge_reference_template`
(a file or module:attr), `judge_max_tokens`, `judge_temperature`, `judge_seed`.
Data: `<data-dir>/mt_bench/question.jsonl` (+ `reference_answer/gpt-4.jsonl`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from evalsuite.judges.base import Judge, JudgeItem, Judgment, run_judges
from evalsuite.judges.tasking import (
    LOWER_IS_BETTER,
    answers,
    judge_kwargs,
    judge_model,
    judgment_values,
    length_control_metrics,
    load_baseline,
    make_judge,
    mean_or_none,
    questions,
    references,
    require_judge,
)

from evalsuite.data import read_jsonl
from evalsuite.errors import UsageError
from evalsuite.records import (
    GenerateRequest,
    Message,
    Output,
    Request,
    Sample,
    SampleRecord,
    Score,
)
from evalsuite.task import Task, TaskContext

REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
# FastChat's `temperature_config` (gen_model_answer.py), used with temperature="fastchat"
FASTCHAT_TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                         "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}


@dataclass
class MTBench(Task):
    """MT-Bench: 80 two-turn questions, LLM-judged per turn (single 1-10 or pairwise vs a baseline)."""

    mode: str = "single"
    baseline: str | None = None
    baseline_task: str = "mt_bench"
    max_tokens: int = 1024
    temperature: float | str = 0.0
    seed: int | None = None  # sampled answers (temperature > 0 or "fastchat"); the run's --seed
    categories: str | None = None  # "writing+math" ('+' since ',' separates task arguments)
    reference_categories: str = ",".join(REFERENCE_CATEGORIES)
    rubric: str | None = None
    length_control: bool = True
    judge_kind: str | None = None  # an `evalsuite.judges` plugin; default "single" or "pairwise" by mode
    judge_reference_kind: str = "reference"  # the judge of reference-guided categories (single mode)
    judge_samples: int | None = None  # None: 1, or the run's --judge-samples
    judge_template: str | None = None
    judge_reference_template: str | None = None
    judge_max_tokens: int = 512
    judge_temperature: float | None = None
    judge_seed: int = 0
    name: ClassVar[str] = "mt_bench"
    version: ClassVar[str] = "1"
    group_by: ClassVar[str | None] = "category"
    higher_is_better: ClassVar[dict[str, bool]] = LOWER_IS_BETTER

    def __post_init__(self) -> None:
        if self.mode not in ("single", "pairwise"):
            raise UsageError(f"mt_bench mode must be 'single' or 'pairwise', got '{self.mode}'")
        if self.mode == "pairwise" and not self.baseline:
            raise UsageError("mt_bench mode=pairwise needs baseline=RUN_DIR (a run of mt_bench by the baseline model)")
        if isinstance(self.temperature, str) and self.temperature != "fastchat":
            raise UsageError(f"mt_bench temperature is a number or 'fastchat' (per category), got '{self.temperature}'")
        if self.temperature == 0:
            self.seed = None  # greedy: no seed is used, none is recorded
        self._categories = [c for c in (self.categories or "").split("+") if c] or None
        self._reference_categories = [c for c in self.reference_categories.replace("+", ",").split(",") if c]
        opts = judge_kwargs(self.judge_samples, None, self.judge_max_tokens, self.judge_temperature, self.judge_seed,
                            self.rubric)
        if self.mode == "single":
            self._judges: dict[str, Judge] = {
                "single": make_judge(self.judge_kind or "single", False, {**opts, "template": self.judge_template}),
                "reference": make_judge(self.judge_reference_kind, False,
                                        {**opts, "template": self.judge_reference_template})}
        else:
            self._judges = {"pairwise": make_judge(self.judge_kind or "pairwise", True,
                                                   {**opts, "template": self.judge_template})}

    # ------------------------------------------------------------------ data and requests
    def load(self, ctx: TaskContext) -> list[Sample]:
        rows = read_jsonl(ctx.data_path("mt_bench", "question.jsonl"))
        refs = self._gpt4_references(ctx)
        samples = []
        for row in rows:
            if self._categories and row["category"] not in self._categories:
                continue
            qid = row["question_id"]
            ref = refs.get(qid) or row.get("reference")
            samples.append(Sample(id=str(qid), input=row["turns"][0], target=ref,
                                  metadata={"category": row["category"], "turns": row["turns"], "reference": ref}))
        return samples

    @staticmethod
    def _gpt4_references(ctx: TaskContext) -> dict[int, list[str]]:
        path = ctx.data_dir / "mt_bench" / "reference_answer" / "gpt-4.jsonl" if ctx.data_dir else None
        if path is None or not path.is_file():
            return {}
        return {r["question_id"]: r["choices"][0]["turns"] for r in read_jsonl(path)}

    def requests(self, sample: Sample) -> list[Request]:
        return [self._turn_request(sample, [{"role": "user", "content": sample.metadata["turns"][0]}])]

    def next_requests(self, sample: Sample, outputs: Sequence[Output]) -> list[Request]:
        turns = sample.metadata["turns"]
        if len(outputs) >= len(turns):
            return []
        history: list[Message] = []
        for question, out in zip(turns, outputs):
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": out.text}]
        return [self._turn_request(sample, history + [{"role": "user", "content": turns[len(outputs)]}])]

    def _turn_request(self, sample: Sample, messages: list[Message]) -> GenerateRequest:
        temperature = (FASTCHAT_TEMPERATURES.get(sample.metadata["category"], 0.7) if self.temperature == "fastchat"
                       else float(self.temperature))
        return GenerateRequest(tuple(messages), max_tokens=self.max_tokens, temperature=temperature,
                               seed=self.seed if temperature > 0 else None)

    def parse_outputs(self, rows: Any, samples: Sequence[Sample] | None = None) -> dict[str, list[str]]:
        """FastChat's model_answer lines (`question_id`, `choices[0].turns`) or `{id, output}` lines."""
        rows = list(rows)
        if rows and "question_id" in rows[0]:
            return {str(r["question_id"]): list(r["choices"][0]["turns"]) for r in rows}
        return super().parse_outputs(rows)

    # ------------------------------------------------------------------ judging
    def score_all(self, records: Sequence[SampleRecord], ctx: TaskContext) -> list[Score]:
        client = require_judge(ctx, self.name)
        baseline = load_baseline(self.baseline, self.baseline_task) if self.mode == "pairwise" else {}
        jobs: list[tuple[Judge, JudgeItem]] = []
        slots: list[list[int]] = []  # per record: indices of its turns' jobs
        problems: list[str | None] = []
        for r in records:
            items, problem = self._items(r, baseline)
            slots.append(list(range(len(jobs), len(jobs) + len(items))))
            jobs.extend(items)
            problems.append(problem)
        judgments = run_judges(client, jobs, f"judging {self.name}")
        return [self._score(r, [judgments[i] for i in idx], problem, [_length_diff(jobs[i][1]) for i in idx])
                for r, idx, problem in zip(records, slots, problems)]

    def _items(self, r: SampleRecord, baseline: dict[str, SampleRecord]) -> tuple[list[tuple[Judge, JudgeItem]], str | None]:
        qs = questions(r)
        ans = answers(r, len(qs))
        refs = references(r) if r.sample.metadata.get("category") in self._reference_categories else None
        refs = refs if refs and len(refs) >= len(qs) else None  # reference-guided only with a reference per turn
        if len(ans) < len(qs):
            return [], f"the model answered {len(ans)} of {len(qs)} turns"
        if self.mode == "single":
            judge = self._judges["reference" if refs else "single"]
            turns = [{"question": q, "answer": a, "reference": refs[i] if refs else None} for i, (q, a) in enumerate(zip(qs, ans))]
        else:
            base = baseline.get(r.sample.id)
            base_ans = answers(base, len(qs)) if base else []
            if len(base_ans) < len(qs):
                return [], "the baseline run has no complete answer to this question"
            judge = self._judges["pairwise"]
            turns = [{"question": q, "answer_a": a, "answer_b": b, "reference": refs[i] if refs else None}
                     for i, (q, a, b) in enumerate(zip(qs, ans, base_ans))]
        return [(judge, JudgeItem(turns, focus=t + 1)) for t in range(len(turns))], None

    def _score(self, r: SampleRecord, judgments: list[Judgment], problem: str | None, diffs: list[float | None]) -> Score:
        key = "score" if self.mode == "single" else "win"
        if problem:
            return Score({key: None, "judge_error": 1.0}, explanation={"error": problem})
        values: dict[str, float | None] = {}
        explanation: dict[str, str] = {}
        for t, j in enumerate(judgments, 1):
            v, e = judgment_values(f"turn_{t}", j)
            values.update(v)
            explanation.update(e)
        turn_values = [j.value for j in judgments]
        values[key] = mean_or_none(turn_values)
        # the turn mean's parts: compare and gate resample questions (clusters of turns), not turns
        complete = values[key] is not None
        values[f"{key}.sum"] = sum(turn_values) if complete else None  # type: ignore[arg-type]
        values[f"{key}.turns"] = float(len(turn_values)) if complete else None
        values["judge_error"] = float(any(j.value is None for j in judgments))
        if self.mode == "pairwise":
            incons = [j.extra["inconsistent"] for j in judgments if "inconsistent" in j.extra]
            values["inconsistent"] = sum(incons) / len(incons) if incons else None
            values.update({f"turn_{t}.length_diff": d for t, d in enumerate(diffs, 1)})
            values["length_diff"] = mean_or_none(diffs)
        answer = {f"turn_{t}": j.value for t, j in enumerate(judgments, 1)}
        return Score(values, answer=answer, explanation=explanation)

    def aggregate(self, records: Sequence[SampleRecord]) -> dict[str, Any]:
        """`score`/`win` as the mean over turns with questions as clusters; in pairwise mode also the
        length-controlled win rate (one (win, length gap) point per judged turn)."""
        out = super().aggregate(records) | judge_model(records)
        key = "score" if self.mode == "single" else "win"
        parts = [f"{key}.sum", f"{key}.turns"]
        scored = [r for r in records if r.error is None and r.score is not None]
        by_group: dict[str, list[SampleRecord]] = {}
        for r in scored:
            by_group.setdefault(str(r.sample.metadata.get(self.group_by)), []).append(r)
        for metrics, recs in [(out["metrics"], scored)] + [(out.get("groups", {}).get(g, {}), rs) for g, rs in by_group.items()]:
            for part in parts:  # per-sample parts of the cluster test, not metrics of their own
                metrics.pop(part, None)
            if key in metrics:
                metrics[key] = turn_mean(recs, *parts)
        out["clusters"] = {key: parts}
        if self.mode == "pairwise" and self.length_control:
            pairs = []
            for r in records:
                values = r.score.values if r.error is None and r.score is not None else {}
                for name, win in values.items():
                    diff = values.get(f"{name}.length_diff")
                    if name.startswith("turn_") and "." not in name and win is not None and diff is not None:
                        pairs.append((win, diff))
            out["metrics"].update(length_control_metrics(pairs))
        return out

    def config(self) -> dict[str, Any]:
        return super().config() | {"judge": {"judges": {type(j).__name__: j.describe() for j in self._judges.values()}}}


def turn_mean(records: Sequence[SampleRecord], num: str, den: str) -> dict[str, float]:
    """sum(turn ratings) / sum(turns) over questions, with the ratio's standard error over questions.

    The stderr is the ratio estimator's (linearised, clusters = questions): with the same number of
    turns in every question it equals the stderr of the per-question means.
    """
    parts = [(float(v[num]), float(v[den])) for r in records
             if (v := r.score.values).get(num) is not None and v.get(den)]  # type: ignore[union-attr]
    n = len(parts)
    if n == 0:
        return {"value": math.nan, "stderr": math.nan, "n": 0}
    total = sum(w for _, w in parts)
    ratio = sum(x for x, _ in parts) / total
    if n < 2:
        return {"value": ratio, "stderr": math.nan, "n": n}
    spread = sum((x - ratio * w) ** 2 for x, w in parts) / (n * (n - 1))
    return {"value": ratio, "stderr": math.sqrt(spread) / (total / n), "n": n}


def _length_diff(item: JudgeItem) -> float | None:
    """Characters the model's answer (A) has over the baseline's (B) in the judged turn; None in single mode."""
    turn = item.turns[(item.focus or len(item.turns)) - 1]
    if "answer_a" not in turn:
        return None
    return float(len(turn["answer_a"] or "") - len(turn["answer_b"] or ""))


mt_bench = MTBench
