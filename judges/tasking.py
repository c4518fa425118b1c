"""Helpers for judged tasks (MT-Bench, win rate) and the arena: the judge, the baseline run,
the conversation a record holds, and turning judgments into score values."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalsuite.judges.base import Judge, Judgment

from evalsuite.errors import UsageError
from evalsuite.records import GenerateRequest, SampleRecord


# Metric directions of judged tasks: judge failures, position bias and length effects are lower-is-better.
LOWER_IS_BETTER = {"judge_error": False, "inconsistent": False, "first_position_bias": False, "length_diff": False,
                   "lc_length_coef": False}


def make_judge(kind: str, pairwise: bool, options: dict[str, Any]) -> Judge:
    """The `evalsuite.judges` plugin named `kind`, built with the task's judge options.

    `pairwise` says what the task feeds it: A/B pairs, or single answers; a judge of the other
    kind is a `UsageError` naming the judges that fit.
    """
    from evalsuite import registry

    factory = registry.get("judges", kind)
    if bool(getattr(factory, "pairwise", False)) != pairwise:
        fits = [n for n in registry.names("judges") if bool(getattr(registry.get("judges", n), "pairwise", False)) == pairwise]
        want = "compares two answers" if pairwise else "grades one answer"
        raise UsageError(f"judge '{kind}' does not fit here: this task needs a judge that {want} ({', '.join(fits)})")
    return factory(**options)


def judge_model(records: Sequence[SampleRecord]) -> dict[str, Any]:
    """`{"judge": {"model", "fingerprint"}}` of the judge that scored these records (from their judge logs)."""
    for r in records:
        expl = r.score.explanation if r.score is not None else {}
        model = next((v for k, v in expl.items() if k == "model" or k.endswith(".model")), None)
        if model is not None:
            fp = next((v for k, v in expl.items() if k == "fingerprint" or k.endswith(".fingerprint")), None)
            return {"judge": {"model": model, "fingerprint": fp}}
    return {}


def require_judge(ctx: Any, task: str) -> Any:
    """The run's judge model, or a `UsageError` saying how to give one."""
    if getattr(ctx, "judge", None) is None:
        raise UsageError(f"task '{task}' is scored by an LLM judge: pass --judge MODEL (e.g. --judge openai:gpt-4o)")
    return ctx.judge


def judge_kwargs(samples: int | None, template: str | None, max_tokens: int, temperature: float | None,
                 seed: int, rubric: str | None = None) -> dict[str, Any]:
    """The keyword arguments every judge takes, from a task's `judge_*` arguments.

    `samples` None means "not given": 1 (the run's `--judge-samples k` arrives as `judge_samples`)."""
    for name, value in (("judge_max_tokens", max_tokens), ("judge_seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{name} must be a whole number, got {value!r}")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))):
        raise UsageError(f"judge_temperature must be a number, got {temperature!r}")
    return {"samples": 1 if samples is None else samples, "template": template, "max_tokens": max_tokens,
            "temperature": temperature, "seed": seed, "rubric": load_rubric(rubric)}


def load_rubric(rubric: str | None) -> str | None:
    """A rubric given as text or as a file path: a file lets it hold commas, which split --task-args."""
    if rubric is None:
        return None
    if not isinstance(rubric, str) or not rubric.strip():
        raise UsageError(f"rubric must be non-empty text or a file, got {rubric!r}")
    path = Path(rubric).expanduser()
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a long rubric text is not a valid path
        is_file = False
    return path.read_text(encoding="utf-8").strip() if is_file else rubric


def length_control_metrics(pairs: Sequence[tuple[float, float]]) -> dict[str, dict[str, Any]]:
    """AlpacaEval-2-style length-controlled win rate from (win, length difference) pairs, as metrics."""
    if not pairs:
        return {}
    from evalsuite.judges.arena import length_controlled_winrate

    lc = length_controlled_winrate([w for w, _ in pairs], [d for _, d in pairs])
    return {"lc_win_rate": {k: lc[k] for k in ("value", "stderr", "n")},
            "lc_length_coef": {"value": lc["length_coef"], "stderr": None, "n": lc["n"]}}


def load_baseline(path: str | Path, task: str) -> dict[str, SampleRecord]:
    """The baseline run's records of `task`, by sample id (only those with an answer)."""
    from evalsuite import rundir

    log = rundir.load_run(path)
    records = log.records_for(task)
    if not records:
        tasks = sorted({r.task for r in log.records})
        raise UsageError(f"baseline run {path} has no samples of task '{task}' (it has: {', '.join(tasks) or 'none'}); "
                         "pass baseline_task=NAME")
    return {r.sample.id: r for r in records if r.error is None and r.outputs}


def answers(record: SampleRecord, n_turns: int | None = None) -> list[str]:
    """The model's answer to each turn: one output per turn, or one output holding every turn's text
    (outputs files in FastChat's format, read by `evalsuite score --outputs`)."""
    outs = [o for o in record.outputs if o.texts is not None]
    if len(outs) == 1 and n_turns and len(outs[0].texts or []) == n_turns > 1:
        return list(outs[0].texts or [])
    return [o.text for o in outs]


def questions(record: SampleRecord) -> list[str]:
    """The user message of each turn: from the task's metadata, else from the requests sent."""
    turns = record.sample.metadata.get("turns")
    if isinstance(turns, list) and turns:
        return [str(t) for t in turns]
    out = []
    for req in record.requests:
        if isinstance(req, GenerateRequest):
            prompt = req.prompt
            out.append(prompt if isinstance(prompt, str) else next(
                (m["content"] for m in reversed(prompt) if m.get("role") == "user"), ""))
    return out


def references(record: SampleRecord) -> list[str] | None:
    refs = record.sample.metadata.get("reference")
    return [str(r) for r in refs] if isinstance(refs, list) and refs else None


def judgment_values(prefix: str, j: Judgment) -> tuple[dict[str, float | None], dict[str, str]]:
    """Score values and explanation entries of one judgment, keys prefixed (e.g. `turn_1`)."""
    values: dict[str, float | None] = {prefix: j.value}
    values.update({f"{prefix}.{k}" if prefix else k: v for k, v in j.extra.items()})
    return values, {f"{prefix}.{k}" if prefix else k: v for k, v in j.log.items()}


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean when every part is there; None if any judgment failed (a partial mean would be biased)."""
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def judge_info(client: Any, judges: Sequence[Judge]) -> dict[str, Any]:
    """The judge model and prompts behind a task's numbers, for results.json."""
    return {"model": str(client.name), "fingerprint": str(client.fingerprint),
            "judges": {type(j).__name__: j.describe() for j in judges}}
