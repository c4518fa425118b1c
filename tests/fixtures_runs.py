"""Synthetic run directories with known per-sample results, for reports and gates.

They are written with the real writer (`evalsuite.rundir.RunWriter` over a typed
`evalsuite.runlog.RunResults`) and `SampleRecord`, so what the tests read is exactly what
`evalsuite run` would leave on disk, without any model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalsuite import rundir, runlog, stats
from evalsuite.records import GenerateRequest, Output, Sample, SampleRecord, Score


@dataclass
class SynthTask:
    """Per-sample scores of one task; everything else gets plausible defaults."""

    scores: dict[str, Sequence[float | None]]  # metric -> one value per sample
    ids: Sequence[str] | None = None
    version: str = "1"
    groups: Sequence[str] | None = None  # metadata["subject"] per sample: per-subtask metrics
    outputs: Sequence[str] | None = None
    targets: Sequence[str] | None = None
    errors: frozenset[int] = frozenset()  # indices of samples whose requests failed
    config: dict[str, Any] = field(default_factory=lambda: {"num_fewshot": 0})
    extra: dict[str, Any] = field(default_factory=dict)  # merged into the task's results entry
    higher_is_better: dict[str, bool] = field(default_factory=dict)  # declared directions (default: higher)
    tokens_out: Sequence[int] | None = None  # generated tokens per sample (default 5)

    @property
    def n(self) -> int:
        return len(next(iter(self.scores.values())))


def binary(n: int, p: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < p) for _ in range(n)]


def flip(values: Sequence[float], down: int, up: int, seed: int) -> list[float]:
    """Copy of 0/1 `values` with `down` ones turned to 0 and `up` zeros turned to 1."""
    rng = random.Random(seed)
    out = list(values)
    ones = [i for i, v in enumerate(out) if v == 1.0]
    zeros = [i for i, v in enumerate(out) if v == 0.0]
    for i in rng.sample(ones, down):
        out[i] = 0.0
    for i in rng.sample(zeros, up):
        out[i] = 1.0
    return out


def training(steps: Sequence[int], metric: str = "gsm8k/exact_match", best: int | None = None) -> runlog.Training:
    """A trainer run's "training" section: losses fall, the score rises then dips (overfitting)."""
    rows = [{"step": s, "train_loss": 2.0 / (1 + i), "val_loss": 1.5 / (1 + i) + 0.05 * i,
             "scores": {metric: 0.2 + 0.1 * i - 0.03 * i * i}} for i, s in enumerate(steps)]
    if best is None:
        best = max(rows, key=lambda r: r["scores"][metric])["step"]
    value = next(r["scores"][metric] for r in rows if r["step"] == best)
    return runlog.Training(steps=rows, best={"step": best, "metric": metric, "value": value})


def arena(ratings: dict[str, tuple[float, float, float]]) -> runlog.Arena:
    """An arena section: Bradley-Terry ratings with CIs and a win matrix consistent with them."""
    names = list(ratings)
    matrix = {a: {b: round(1 / (1 + 10 ** ((ratings[b][0] - ratings[a][0]) / 400)), 3) for b in names if b != a}
              for a in names}
    return runlog.Arena(ratings={m: {"rating": r, "lo": lo, "hi": hi} for m, (r, lo, hi) in ratings.items()},
                        win_matrix=matrix)


def _records(name: str, t: SynthTask) -> list[SampleRecord]:
    ids = list(t.ids) if t.ids is not None else [f"{name}-{i}" for i in range(t.n)]
    records = []
    for i, sid in enumerate(ids):
        target = t.targets[i] if t.targets else f"answer {i}"
        meta = {"subject": t.groups[i]} if t.groups else {}
        sample = Sample(sid, f"Question {i} of {name}: what is <b>{i}</b> & co?", target, None, meta)
        error = "backend timed out" if i in t.errors else None
        text = t.outputs[i] if t.outputs else f"The answer is {i}."
        outputs = [] if error else [Output(texts=[text], tokens_in=12, tokens_out=t.tokens_out[i] if t.tokens_out else 5)]
        score = None if error else Score({m: vals[i] for m, vals in t.scores.items()}, answer=text[-3:])
        records.append(SampleRecord(name, sample, [GenerateRequest(prompt=sample.input)], outputs, score, error))
    return records


def _metrics(records: list[SampleRecord], metrics: Sequence[str], t: SynthTask) -> dict[str, Any]:
    ok = [r for r in records if r.error is None and r.score is not None]
    return {m: {**stats.metric([float(v) for r in ok if (v := r.score.values.get(m)) is not None]),
                "higher_is_better": t.higher_is_better.get(m, True)} for m in metrics}


def task_entry(records: list[SampleRecord], t: SynthTask) -> runlog.TaskResult:
    entry: dict[str, Any] = {"version": t.version, "n": len(records), "metrics": _metrics(records, list(t.scores), t),
                             "config": t.config, "timing": {"wall_s": 1.0}, "errors": len(t.errors)}
    if t.groups:
        entry["groups"] = {g: _metrics([r for r in records if r.sample.metadata["subject"] == g], list(t.scores), t)
                           for g in sorted(set(t.groups))}
    for key, value in t.extra.items():  # dicts (e.g. extra aggregate-only "metrics") are merged, not replaced
        entry[key] = {**entry[key], **value} if isinstance(value, dict) and isinstance(entry.get(key), dict) else value
    return runlog.TaskResult.model_validate(entry)


def write_run(path: Path, tasks: dict[str, SynthTask], model: str = "model-a",
              status: str = "complete", created: str = "2025-01-01T12:00:00+0000",
              extra: dict[str, Any] | None = None) -> Path:
    """A complete run directory at `path`, written by `RunWriter` like `evalsuite run` writes one.

    `extra` sets typed top-level sections, e.g. "training" (per-checkpoint scores and losses) or
    "arena" (judge ratings), as trainer and arena runs write them.
    """
    sections = dict(extra or {})
    kind = "training" if "training" in sections else "arena" if "arena" in sections else "eval"
    results = runlog.RunResults(
        kind=kind, model=runlog.ModelInfo(name=model, backend="hf", fingerprint=f"fp-{model}"),
        config={"tasks": list(tasks), "limit": None, "seed": 1234, "model": model},
        environment=runlog.Environment(versions={"python": "3.11.2", "evalsuite": "0.1.0"}, git_sha="0123456789abcdef"),
        created=created, **sections)
    path.mkdir(parents=True, exist_ok=True)
    writer = rundir.RunWriter(path, results)
    for name, t in tasks.items():
        records = _records(name, t)
        writer.add_task(name, task_entry(records, t), records)
    writer.finish(status)  # type: ignore[arg-type]
    return path
