"""Means over clustered sub-items are compared and gated by cluster: MT-Bench's turns within questions,
and code tasks' samples within problems (pass@k is already one value per problem).

The run directories are written the way `evalsuite run` writes them: records scored by the task's own
`_score` / `_score_one` (only the judge or the sandbox is scripted), summarised by the runner's
`finish_task`, written by `RunWriter`; then `compare` and `gate` read them back from disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from evalsuite.tasks.humaneval import HumanEval
from evalsuite.tasks.mt_bench import MTBench

from evalsuite import rundir, runlog, stats
from evalsuite.judges.base import Judgment
from evalsuite.records import GenerateRequest, Output, Sample, SampleRecord, Score
from evalsuite.reports.compare import compare
from evalsuite.reports.gate import gate, parse_rules
from evalsuite.rundir import load_run
from evalsuite.runner import finish_task
from evalsuite.sandbox.execute import Status, Verdict
from evalsuite.task import TaskContext


class ScriptedMTBench(MTBench):
    """MT-Bench whose judge is a table of ratings (sample id -> one rating per turn)."""

    ratings: dict[str, list[float | None]] = {}

    def score_all(self, records: Sequence[SampleRecord], ctx: TaskContext) -> list[Score]:
        return [self._score(r, [Judgment(v) for v in self.ratings[r.sample.id]], None,
                            [None] * len(self.ratings[r.sample.id])) for r in records]


class ScriptedHumanEval(HumanEval):
    """HumanEval whose sandbox is a table of verdicts (sample id -> passed or not, per completion)."""

    passes: dict[str, list[bool]] = {}

    def score_all(self, records: Sequence[SampleRecord], ctx: TaskContext) -> list[Score]:
        return [self._score_one([Verdict(Status.PASSED if ok else Status.FAILED) for ok in self.passes[r.sample.id]], 3.0)
                for r in records]

    def config(self) -> dict[str, Any]:
        return {"samples_per_task": self.samples_per_task}  # the sandbox's host settings are not needed here


def _write(path: Path, name: str, task: Any, ids: Sequence[str], model: str,
           categories: Sequence[str] | None = None) -> Path:
    """A run dir of one task: records scored and summarised by the task and the runner, written by RunWriter."""
    records = []
    for i, sid in enumerate(ids):
        meta = {"category": categories[i]} if categories else {}
        sample = Sample(sid, f"question {sid}", None, None, meta)
        records.append(SampleRecord(name, sample, [GenerateRequest(prompt=sample.input)],
                                    [Output(texts=[f"answer {sid}"])]))
    entry = finish_task(name, task, records, TaskContext(), {"wall_s": 1.0})
    results = runlog.RunResults(kind="eval", model=runlog.ModelInfo(name=model, backend="hf", fingerprint=f"fp-{model}"),
                                config={"tasks": [name], "limit": None, "seed": 1234, "model": model},
                                environment=runlog.Environment(versions={"python": "3.11", "evalsuite": "0.1.0"}),
                                created="2025-01-01T12:00:00+0000")
    path.mkdir(parents=True)
    writer = rundir.RunWriter(path, results)
    writer.add_task(name, entry, records)
    writer.finish("complete")
    return path


def _mt_bench(path: Path, ratings: dict[str, list[float | None]], model: str, mode: str = "single") -> Path:
    task = ScriptedMTBench(mode=mode, baseline="unused" if mode == "pairwise" else None)
    task.ratings = ratings
    cats = ["writing" if int(sid.split(".")[0]) % 2 else "math" for sid in ratings]
    return _write(path, "mt_bench", task, list(ratings), model, cats)


def _gate(base: Path, cand: Path, task: str, metric: str, max_drop: Any = 0.0) -> Any:
    rules = parse_rules({"rules": [{"task": task, "metric": metric, "max_drop": max_drop, "alpha": 0.05}]})
    comparison = compare([load_run(base), load_run(cand)], n_boot=4000, seed=0)
    (row,) = [r for r in comparison.rows if r.task == task and r.metric == metric and r.group is None]
    (check,) = [c for c in gate(comparison, rules).checks if c.metric == metric and c.group is None]
    return row, check


def test_mt_bench_score_is_the_turn_mean_with_questions_as_clusters(tmp_path: Path) -> None:
    """Catches MT-Bench's score losing its cluster declaration or its parts leaking into the metrics:
    results.json names `score.sum` / `score.turns` under `clusters`, the metric is the mean over judged
    turns (FastChat's number) with n = questions, and a question with a failed turn is left out whole."""
    ratings: dict[str, list[float | None]] = {"1": [8.0, 6.0], "2": [3.0, 5.0], "3": [9.0, 9.0], "4": [7.0, None]}
    run = load_run(_mt_bench(tmp_path / "a", ratings, "m"))
    entry = run.tasks["mt_bench"]
    assert entry.clusters == {"score": ["score.sum", "score.turns"]}
    assert not {"score.sum", "score.turns"} & set(entry.metrics), "parts of the cluster test are not metrics"
    assert not any({"score.sum", "score.turns"} & set(g) for g in entry.groups.values())
    judged = [8.0, 6.0, 3.0, 5.0, 9.0, 9.0]
    assert entry.metrics["score"].value == pytest.approx(sum(judged) / len(judged)) and entry.metrics["score"].n == 3
    # two turns in every question: the stderr over questions is the per-question means' stderr
    assert entry.metrics["score"].stderr == pytest.approx(stats.mean_stderr([7.0, 4.0, 9.0])[1])
    assert entry.groups["writing"]["score"].value == pytest.approx((8 + 6 + 9 + 9) / 4)  # questions 1 and 3
    by_id = {r.sample.id: r.score.values for r in run.records_for("mt_bench")}
    assert (by_id["1"]["score.sum"], by_id["1"]["score.turns"]) == (14.0, 2.0)
    assert by_id["4"]["score"] is None and by_id["4"]["score.sum"] is None  # a partial mean would be biased


def test_pairwise_win_is_clustered_by_question_too(tmp_path: Path) -> None:
    """Catches pairwise mode's win rate being declared under the wrong key (it is `win`, not `score`)."""
    entry = load_run(_mt_bench(tmp_path / "a", {"1": [1.0, 0.5], "2": [0.0, 0.0]}, "m", mode="pairwise")).tasks["mt_bench"]
    assert entry.clusters == {"win": ["win.sum", "win.turns"]}
    assert entry.metrics["win"].value == pytest.approx(1.5 / 4) and entry.metrics["win"].n == 2


def _correlated_turns(n: int) -> tuple[dict[str, list[float | None]], dict[str, list[float | None]]]:
    """A baseline and a candidate whose change moves both turns of a question together (+0.8 or -1.2 on
    alternate questions): a mean drop of 0.2 that is real per question and noise for 80 questions."""
    base: dict[str, list[float | None]] = {}
    cand: dict[str, list[float | None]] = {}
    for i in range(n):
        level, delta = 3 + (i * 37 % 50) / 10, (0.8 if i % 2 else -1.2)
        base[str(i)] = [level, level + 1]
        cand[str(i)] = [level + delta, level + 1 + delta]
    return base, cand


def test_gate_tests_mt_bench_by_question_where_a_turn_level_test_would_fail(tmp_path: Path) -> None:
    """Catches the gate treating MT-Bench's turns as independent: the same ratings gated per turn (160 items,
    the naive layout) fail as a significant drop, while the clustered test on 80 questions calls it noise."""
    base, cand = _correlated_turns(80)
    row, check = _gate(_mt_bench(tmp_path / "a", base, "a"), _mt_bench(tmp_path / "b", cand, "b"), "mt_bench", "score")
    assert row.tests[1].method == "paired-cluster-bootstrap" and row.tests[1].n == 80
    assert row.estimates[0].method == "cluster-bootstrap"
    assert check.status == "pass" and "not significant" in check.message, check.message
    # the naive layout: every turn its own sample (one-turn clusters), as if turns were independent
    turns = lambda r: {f"{q}.{t}": [v] for q, vs in r.items() for t, v in enumerate(vs)}  # noqa: E731
    naive_row, naive = _gate(_mt_bench(tmp_path / "c", turns(base), "a"), _mt_bench(tmp_path / "d", turns(cand), "b"),
                             "mt_bench", "score")
    assert naive_row.tests[1].n == 160 and naive_row.delta(1) == pytest.approx(row.delta(1))
    assert naive.status == "fail" and naive.pvalue < 0.05 <= check.pvalue, (naive.message, check.message)


def test_gate_reads_mt_bench_ratings_on_their_own_scale(tmp_path: Path) -> None:
    """Catches a clustered 1-10 rating gated as a [0, 1] rate: `max_drop: auto` is 1% of the baseline's
    score (0.06 here), not one point of a rate (0.01), so a consistent 0.05 drop passes, and 0.1 fails."""
    base = {str(i): [5.0 + i % 3, 6.0 + i % 2] for i in range(40)}
    small = {q: [v - 0.05 for v in vs] for q, vs in base.items()}  # type: ignore[operator]
    big = {q: [v - 0.1 for v in vs] for q, vs in base.items()}  # type: ignore[operator]
    a = _mt_bench(tmp_path / "a", base, "a")
    row, check = _gate(a, _mt_bench(tmp_path / "b", small, "b"), "mt_bench", "score", max_drop="auto")
    assert not row.unit_interval and row.tests[1].pvalue < 0.05
    assert check.status == "pass", check.message
    _, check = _gate(a, _mt_bench(tmp_path / "c", big, "c"), "mt_bench", "score", max_drop="auto")
    assert check.status == "fail" and "pts" not in check.message, check.message


def test_a_baseline_written_before_the_cluster_parts_is_still_tested_by_question(tmp_path: Path) -> None:
    """Catches an MT-Bench baseline from before `score.sum` / `score.turns` losing its paired test (the gate then
    fails a noise-level change with "no per-sample scores"): its per-question scores pair with the candidate's."""
    import json

    base, cand = _correlated_turns(80)
    old = _mt_bench(tmp_path / "a", base, "a")
    lines = [json.loads(x) for x in (old / "samples.jsonl").read_text().splitlines()]
    for rec in lines:  # as an older evalsuite wrote it: the per-question mean only
        for key in ("score.sum", "score.turns"):
            rec["scores"].pop(key, None)
    (old / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    row, check = _gate(old, _mt_bench(tmp_path / "b", cand, "b"), "mt_bench", "score")
    assert row.tests[1] is not None and row.tests[1].n == 80, "paired over the 80 questions"
    assert check.status == "pass" and "not significant" in check.message, check.message
    assert not row.unit_interval, "a 1-10 rating, also when one run has no parts"


def _humaneval(path: Path, passes: dict[str, list[bool]], model: str) -> Path:
    task = ScriptedHumanEval(samples_per_task=len(next(iter(passes.values()))))
    task.passes = passes
    return _write(path, "humaneval", task, list(passes), model)


def test_pass_at_k_is_one_value_per_problem_and_paired_by_problem(tmp_path: Path) -> None:
    """Catches pass@k becoming a per-completion mean: with 5 completions per problem, each problem's pass@1 is
    the unbiased estimator c/n, pass@k declares no clusters, and the paired test pairs the 60 problems. The
    same completions gated one by one (300 items, the naive layout) would call this noise a significant drop:
    half the problems lose 3 of 5 passes, the other half gain 2."""
    base, cand = {}, {}
    for i in range(60):
        before, after = (4, 1) if i % 2 else (1, 3)
        base[f"HumanEval/{i}"] = [j < before for j in range(5)]
        cand[f"HumanEval/{i}"] = [j < after for j in range(5)]
    a, b = _humaneval(tmp_path / "a", base, "a"), _humaneval(tmp_path / "b", cand, "b")
    entry = load_run(a).tasks["humaneval"]
    assert entry.clusters == {} and entry.metrics["pass@1"].n == 60
    scores = {r.sample.id: r.score.values for r in load_run(a).records_for("humaneval")}
    assert all(scores[p]["pass@1"] == pytest.approx(stats.pass_at_k(5, sum(v), 1)) for p, v in base.items())
    row, check = _gate(a, b, "humaneval", "pass@1")
    assert row.tests[1].method == "paired-bootstrap" and row.tests[1].n == 60
    assert row.delta(1) == pytest.approx(-0.1)
    assert check.status == "pass" and "not significant" in check.message, check.message
    per_completion = lambda d: {f"{p}#{j}": [v] for p, vs in d.items() for j, v in enumerate(vs)}  # noqa: E731
    naive_row, naive = _gate(_humaneval(tmp_path / "c", per_completion(base), "a"),
                             _humaneval(tmp_path / "d", per_completion(cand), "b"), "humaneval", "pass@1")
    assert naive_row.tests[1].n == 300 and naive_row.delta(1) == pytest.approx(row.delta(1))
    assert naive.status == "fail" and naive.pvalue < 0.05 <= check.pvalue, (naive.message, check.message)
