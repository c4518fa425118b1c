"""Behaviour diagnostics of generated answers: how long, cut off or not, repetitive, refusing.

Instruction tuning changes how a model answers as much as its scores ("too verbose", "never ends its
turn", "refuses basic questions"). These are pure functions over `SampleRecord`s, so a run, a re-scored
run and a comparison all compute the same numbers from samples.jsonl, with no model:

- `sample_values(record)`: one sample's values (None where a value cannot be known);
- `summarize(records)`: a task's `diagnostics` section of results.json (`runlog.Diagnostic` each);
- `changes(base, cand, base_label)`: each diagnostic in two runs, paired by sample id, and a one-line
  hint when it moved by more than its noise. The hint rules live here and only here: compare, the
  HTML report and the trainer's checkpoint table all call this.

Diagnostics are not metrics: they have no "better", and the gate never gates them.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

from evalsuite import stats
from evalsuite.records import GenerateRequest, Output, SampleRecord, finish_reasons
from evalsuite.runlog import Diagnostic
from evalsuite.scorers.refusal import REFUSAL, strmatch_label

ALPHA = 0.05  # a change is beyond noise when its paired test says p < ALPHA ...
MIN_RATIO = 1.25  # ... and answer length moved by at least this factor (either way)
MIN_POINTS = 0.05  # ... or a rate moved by at least this much (5 points)
NGRAM = 4  # repetition: share of repeated word 4-grams within an answer
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Spec:
    """One diagnostic: its results.json key, how reports name it, its direction, its kind of number."""

    name: str
    label: str
    higher_is_better: bool | None  # None: no direction
    kind: str  # "tokens" | "rate" (a share, in %) | "ratio" (in [0, 1], not a share of answers)
    per_sample: bool  # False: a whole-task number (no per-sample values, no paired test)
    short: str | None = None  # its column in the trainer's checkpoint table (None: not a column there)


SPECS: tuple[Spec, ...] = (
    Spec("mean_tokens", "length (tokens, mean)", None, "tokens", True, "tokens"),
    Spec("median_tokens", "length (tokens, median)", None, "tokens", False),
    Spec("cut_off", "cut off at max_tokens", False, "rate", True, "cut off"),
    Spec("ended_turn", "ended the turn", True, "rate", True, "ended turn"),
    Spec("repeat_4gram", "repeated 4-grams", None, "rate", True, "repeat 4-gram"),
    Spec("distinct_2", "distinct-2 (task)", None, "ratio", False, "distinct-2"),
    Spec("refusal", "refusals (strmatch)", None, "rate", True, "refusal"),
)
NAMES = tuple(s.name for s in SPECS)
SPEC = {s.name: s for s in SPECS}


class SampleDiagnostics(TypedDict):
    """One sample's values (`sample_values`): what compare pairs by sample id; None where unknown."""

    mean_tokens: float | None
    cut_off: float | None
    ended_turn: float | None
    repeat_4gram: float | None
    refusal: float | None


# ---------------------------------------------------------------------------- one sample
def generations(record: SampleRecord) -> list[tuple[GenerateRequest, Output]]:
    """The record's answered generate requests (loglikelihood requests and failed calls left out)."""
    return [(req, out) for req, out in zip(record.requests, record.outputs)
            if isinstance(req, GenerateRequest) and out.texts is not None and out.error is None]


def words(text: str) -> list[str]:
    """Lower-cased runs of word characters: repetition and distinct-n ignore punctuation and spacing."""
    return WORD.findall(text.lower())


def repeated_share(text: str, n: int = NGRAM) -> float | None:
    """Share of the answer's word n-grams that repeat an earlier one (0: none repeats); None below n words."""
    w = words(text)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else None


def tokens_per_text(out: Output) -> float | None:
    """Generated tokens per text as the backend counted them; None when it did not (outputs from a file)."""
    texts = out.texts or []
    if not texts:
        return None
    if out.tokens_out == 0 and any(texts):
        return None
    return out.tokens_out / len(texts)


def finish(req: GenerateRequest, out: Output) -> list[str] | None:
    """`records.finish_reasons` without touching the record; None when neither reasons nor counts are known."""
    given = out.extra.get("finish_reason")
    known = isinstance(given, list) and len(given) == len(out.texts or [])
    if not known and tokens_per_text(out) is None:
        return None
    return finish_reasons(req, dataclasses.replace(out, extra=dict(out.extra)))


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def sample_values(record: SampleRecord) -> SampleDiagnostics | None:
    """One sample's per-sample diagnostics (over all its generated texts); None: it generated nothing.

    `mean_tokens`: tokens per text; `cut_off` / `ended_turn`: share of texts that hit max_tokens /
    ended by themselves; `repeat_4gram`: mean `repeated_share` of its texts of 4+ words; `refusal`: share
    of texts XSTest's string match calls a full refusal.
    """
    if record.error is not None:
        return None
    gens = generations(record)
    if not gens:
        return None
    texts = [t for _, out in gens for t in out.texts or []]
    tokens = [per for _, out in gens if (per := tokens_per_text(out)) is not None for _ in out.texts or []]
    reasons = [x for req, out in gens if (f := finish(req, out)) is not None for x in f]
    cut = reasons.count("length") / len(reasons) if reasons else None
    return SampleDiagnostics(
        mean_tokens=_mean(tokens),
        cut_off=cut,
        ended_turn=None if cut is None else 1 - cut,
        repeat_4gram=_mean([r for t in texts if (r := repeated_share(t)) is not None]),
        refusal=_mean([float(strmatch_label(t)[0] == REFUSAL) for t in texts]),
    )


def bigrams(record: SampleRecord) -> Counter[tuple[str, str]]:
    """Word bigrams of all the sample's generated texts (within each text)."""
    out: Counter[tuple[str, str]] = Counter()
    for _, o in generations(record):
        for t in o.texts or []:
            w = words(t)
            out.update(zip(w, w[1:]))
    return out


# ---------------------------------------------------------------------------- a task
def per_sample(records: Sequence[SampleRecord]) -> dict[str, SampleDiagnostics]:
    """sample id -> its values, for the samples that generated text."""
    return {r.sample.id: v for r in records if (v := sample_values(r)) is not None}


def distinct_2(counts: Sequence[Counter[tuple[str, str]]]) -> float | None:
    """Distinct bigrams / all bigrams over the samples' answers (Li et al. 2016); None without bigrams."""
    total: Counter[tuple[str, str]] = Counter()
    for c in counts:
        total.update(c)
    n = sum(total.values())
    return len(total) / n if n else None


def _leave_one_out(counts: Sequence[Counter[tuple[str, str]]]) -> list[float | None]:
    """distinct-2 without each sample in turn, in one pass over the bigram counts."""
    total: Counter[tuple[str, str]] = Counter()
    for c in counts:
        total.update(c)
    unique, n = len(total), sum(total.values())
    out: list[float | None] = []
    for c in counts:
        rest = n - sum(c.values())
        gone = sum(1 for g, k in c.items() if total[g] == k)  # bigrams only this sample has
        out.append((unique - gone) / rest if rest else None)
    return out


def jackknife_stderr(thetas: Sequence[float | None]) -> float | None:
    """Jackknife standard error from leave-one-out estimates (resampling with replacement would count a
    duplicated answer's bigrams as repeats and bias distinct-n down)."""
    vals = [t for t in thetas if t is not None]
    n = len(vals)
    if n < 2 or n != len(thetas):
        return None
    mean = sum(vals) / n
    return math.sqrt((n - 1) / n * sum((v - mean) ** 2 for v in vals))


def summarize(records: Sequence[SampleRecord]) -> dict[str, Diagnostic]:
    """The task's `diagnostics` section of results.json; empty for a task that generates no text."""
    values = per_sample(records)
    ok = [r for r in records if r.sample.id in values]
    if not values:
        return {}
    out: dict[str, Diagnostic] = {}
    for spec in SPECS:
        if spec.per_sample:
            vals = [v[spec.name] for v in values.values() if v[spec.name] is not None]
            if vals:
                mean, se = stats.mean_stderr(vals)  # type: ignore[arg-type]
                out[spec.name] = Diagnostic(value=mean, stderr=se if math.isfinite(se) else None, n=len(vals),
                                            higher_is_better=spec.higher_is_better)
    lengths = [v["mean_tokens"] for v in values.values() if v["mean_tokens"] is not None]
    if lengths:
        out["median_tokens"] = Diagnostic(value=float(statistics.median(lengths)), n=len(lengths))
    counts = [bigrams(r) for r in ok]
    d2 = distinct_2(counts)
    if d2 is not None:
        out["distinct_2"] = Diagnostic(value=d2, stderr=jackknife_stderr(_leave_one_out(counts)), n=len(counts))
    return {name: out[name] for name in NAMES if name in out}


# ---------------------------------------------------------------------------- two runs
@dataclass(frozen=True)
class Change:
    """One diagnostic of one task in the baseline and a candidate: values, the paired test, the hint."""

    name: str
    base: Diagnostic | None
    cand: Diagnostic | None
    test: stats.PairedTest | None  # candidate minus baseline on their shared samples; None: no test
    hint: str | None  # set when the change is beyond noise (see `hint`)


def paired_distinct_2(a: dict[str, Counter[tuple[str, str]]], b: dict[str, Counter[tuple[str, str]]]) -> stats.PairedTest | None:
    """distinct-2 of B minus A on their shared samples; paired jackknife standard error, normal p-value."""
    shared = [s for s in a if s in b]
    ca, cb = [a[s] for s in shared], [b[s] for s in shared]
    da, db = distinct_2(ca), distinct_2(cb)
    if da is None or db is None:
        return None
    delta = db - da
    loo = [None if x is None or y is None else y - x for x, y in zip(_leave_one_out(ca), _leave_one_out(cb))]
    se = jackknife_stderr(loo)
    if se is None:
        return stats.PairedTest(delta, math.nan, math.nan, math.nan, len(shared), "paired-jackknife")
    if se == 0:
        return stats.PairedTest(delta, delta, delta, 1.0 if delta == 0 else 0.0, len(shared), "paired-jackknife")
    from scipy.stats import norm

    lo, hi = stats.normal_ci(delta, se)
    return stats.PairedTest(delta, lo, hi, float(2 * norm.sf(abs(delta) / se)), len(shared), "paired-jackknife")


def _pct(x: float) -> str:
    return f"{x:.0%}" if x == 0 or abs(x) >= 0.01 else f"{x:.1%}"


def hint(name: str, base: Diagnostic | None, cand: Diagnostic | None, test: stats.PairedTest | None,
         base_label: str) -> str | None:
    """A one-line hint when a diagnostic moved beyond its noise, else None.

    Beyond noise: the paired test on the shared samples has p < ALPHA, and the move is big enough to
    matter: length by a factor of MIN_RATIO or more, a rate by MIN_POINTS or more. `ended_turn` (the
    complement of `cut_off`) and the median get no hint of their own.
    """
    if base is None or cand is None or base.value is None or cand.value is None or test is None:
        return None
    if not (math.isfinite(test.pvalue) and test.pvalue < ALPHA):
        return None
    a, b = base.value, cand.value
    if name == "mean_tokens":
        if a > 0 and b / a >= MIN_RATIO:
            return f"answers {b / a:.1f}x longer than in {base_label} ({a:.0f} -> {b:.0f} tokens)"
        if b > 0 and a / b >= MIN_RATIO:
            return f"answers {a / b:.1f}x shorter than in {base_label} ({a:.0f} -> {b:.0f} tokens)"
        return None
    if abs(b - a) < MIN_POINTS:
        return None
    more = "more" if b > a else "less"
    if name == "cut_off":
        return f"cut off at max_tokens: {_pct(a)} -> {_pct(b)}"
    if name == "repeat_4gram":
        return f"repeats itself {more}: repeated 4-grams {_pct(a)} -> {_pct(b)}"
    if name == "distinct_2":
        return f"answers {'more' if b > a else 'less'} varied across the task: distinct-2 {a:.2f} -> {b:.2f}"
    if name == "refusal":
        return f"refuses {more}: {_pct(a)} -> {_pct(b)} of answers start with a refusal phrase"
    return None


def changes(base: Sequence[SampleRecord], cand: Sequence[SampleRecord], base_label: str = "the baseline") -> list[Change]:
    """Every diagnostic either run has, with its paired test over shared sample ids and its hint."""
    sa, sb = summarize(base), summarize(cand)
    va, vb = per_sample(base), per_sample(cand)
    out = []
    for spec in SPECS:
        if spec.name not in sa and spec.name not in sb:
            continue
        test = None
        if spec.per_sample:
            shared = [s for s in va if s in vb and va[s][spec.name] is not None and vb[s][spec.name] is not None]
            if shared:
                test = stats.paired_test([va[s][spec.name] for s in shared],  # type: ignore[misc]
                                         [vb[s][spec.name] for s in shared])  # type: ignore[misc]
        elif spec.name == "distinct_2":
            test = paired_distinct_2({r.sample.id: bigrams(r) for r in base if r.sample.id in va},
                                     {r.sample.id: bigrams(r) for r in cand if r.sample.id in vb})
        out.append(Change(spec.name, sa.get(spec.name), sb.get(spec.name), test,
                          hint(spec.name, sa.get(spec.name), sb.get(spec.name), test, base_label)))
    return out


def hints(base: Sequence[SampleRecord], cand: Sequence[SampleRecord], base_label: str = "the baseline") -> list[str]:
    """Only the hints of `changes`: what a one-line summary (the trainer's table) shows."""
    return [c.hint for c in changes(base, cand, base_label) if c.hint]
