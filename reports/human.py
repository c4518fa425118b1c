"""Human judgments beside a comparison: `evalsuite compare RUN_A RUN_B --human STORE_OR_EXPORT`.

The source is an `evalsuite annotate` store (SQLite) or the run dir `annotate export` wrote from one.
Every number comes from `evalsuite.annotate` (`export.summarize`, `stats.*`), so compare, the HTML
report and the export always agree. A store is only shown next to the runs it was made from (matched
by resolved path; its model names become the comparison's labels). Where the compared runs hold an
LLM judge's pairwise verdicts on the same samples (a `winrate` or `mt_bench mode=pairwise` task whose
`baseline` is the other run), or an `--arena` run judged the same runs, the judge is measured against
the humans with `stats.judge_agreement`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalsuite.errors import UsageError
from evalsuite.reports.numbers import fmt_number

if TYPE_CHECKING:
    from evalsuite.reports.compare import Comparison
    from evalsuite.rundir import RunLog


@dataclass
class Table:
    """One table of the block, already formatted: the terminal, Markdown and HTML lay it out alike."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class HumanBlock:
    """The human judgments of one store, in the comparison's run labels."""

    source: str
    mode: str
    task: str | None
    summary: dict[str, Any]  # the `human` section (`export.summarize`)
    labels: dict[str, str]  # the store's model name -> the comparison's label
    per_pair: dict[str, dict[str, int]]  # "a vs b" -> distinct items and annotators
    judge: dict[str, Any] | None = None  # stats.judge_agreement, when a judge saw the same items
    judge_from: list[str] = field(default_factory=list)  # where the judge's verdicts came from
    judge_not_pooled: list[str] = field(default_factory=list)  # other judges' verdicts on the items, left apart

    def label(self, model: str) -> str:
        return self.labels.get(model, model)


# ---------------------------------------------------------------------------- loading
def _open(source: str) -> Any:
    from evalsuite.annotate.export import ExportedProject
    from evalsuite.annotate.store import Store

    p = Path(source)
    if p.is_dir():
        return ExportedProject(p)
    if not p.exists():
        raise UsageError(f"--human {source}: no such annotation store or export directory (make one with "
                         "`evalsuite annotate RUN RUN` and `evalsuite annotate export`)")
    return Store(p)


def _run_labels(view: Any, source: str, comp: Comparison) -> dict[str, str]:
    """The store's model name -> the comparison's label, or a `UsageError` when the store holds other runs."""
    sources = [str(s) for s in view.project.get("sources") or []]
    compared = {str(run.path.resolve()): i for i, run in enumerate(comp.runs)}
    missing = [s for s in sources if str(Path(s).resolve()) not in compared]
    if not sources or missing:
        held = ", ".join(sources) or "no run directories (an imported items file)"
        raise UsageError(f"--human {source}: the store holds judgments of {held}, not of the compared runs "
                         f"({', '.join(str(r.path) for r in comp.runs)}); pass the store made from these runs")
    names = list(view.project.get("models") or [])
    out: dict[str, str] = {}
    for n, s in enumerate(sources):
        i = compared[str(Path(s).resolve())]
        # the store's naming (`sources.from_runs`): the model name, "name (dir)" for a repeated one
        name = names[n] if n < len(names) else comp.runs[i].name
        if n >= len(names) and name in out:
            name = f"{name} ({Path(s).name})"
        out[name] = comp.labels[i]
    return out


def _per_pair(view: Any) -> dict[str, dict[str, int]]:
    seen: dict[str, tuple[set[str], set[str]]] = {}
    for j in view.judgments():
        models = j["result"].get("models")
        if view.mode == "pairwise" and models:
            items, annotators = seen.setdefault(f"{models[0]} vs {models[1]}", (set(), set()))
            items.add(j["item"])
            annotators.add(j["annotator"])
    return {k: {"items": len(i), "annotators": len(a)} for k, (i, a) in seen.items()}


def _record(model_a: str, model_b: str, sample_id: str, values: dict[str, Any]) -> Any:
    """A judge verdict in the shape of an arena battle, which `stats.judge_agreement` reads."""
    from evalsuite.records import Sample, SampleRecord, Score

    meta = {"model_a": model_a, "model_b": model_b, "sample_id": sample_id}
    return SampleRecord("judge", Sample(f"{model_a} vs {model_b} | {sample_id}", "", metadata=meta), [], [],
                        Score(values))


def _task_verdicts(run: RunLog, name: str, runs: dict[str, str], task: str | None) -> list[tuple[str, list[Any]]]:
    """Pairwise judge verdicts of `run` against a baseline run the store also holds (winrate, mt_bench pairwise):
    one battle per judged turn, `run`'s model first."""
    by_path = {str(Path(p).resolve()): m for m, p in runs.items()}
    by_dir = {Path(p).name: m for m, p in runs.items()}
    found: list[tuple[str, list[Any]]] = []
    for t, entry in run.tasks.items():
        records: list[Any] = []
        baseline = entry.config.get("baseline")
        if not baseline or (task and t != task):
            continue
        other = by_path.get(str(Path(baseline).resolve())) or by_dir.get(Path(str(baseline)).name)
        if other is None or other == name:
            continue
        for r in run.records_for(t):
            v = r.score.values if r.error is None and r.score is not None else {}
            turns = sorted(k for k in v if k.startswith("turn_") and "." not in k)
            for prefix in turns or [""]:
                key, dot = (prefix, f"{prefix}.") if prefix else ("win", "")
                if isinstance(v.get(key), (int, float)):
                    records.append(_record(name, other, r.sample.id, {
                        "win_a": float(v[key]), "inconsistent": v.get(f"{dot}inconsistent", 0.0) or 0.0,
                        "first_position_bias": v.get(f"{dot}first_position_bias", 0.0) or 0.0}))
        if records:
            found.append((f"{run.path} task {t} (vs {baseline})", records))
    return found


def judge_verdicts(view: Any, labels: dict[str, str], comp: Comparison,
                   arena_runs: Sequence[RunLog] = ()) -> list[tuple[str, list[Any]]]:
    """Every LLM-judge pairwise verdict on the store's model pairs, per source (where, verdicts): the compared
    runs' judge tasks and arena runs that judged the same run directories (their names mapped to the store's).
    Sources stay apart: two judges' verdicts averaged per item would read as ties that neither judge gave."""
    by_label = {lab: run for lab, run in zip(comp.labels, comp.runs)}
    runs = {m: str(by_label[lab].path) for m, lab in labels.items()}
    task = view.project.get("task")
    found: list[tuple[str, list[Any]]] = []
    for model in labels:
        found += _task_verdicts(by_label[labels[model]], model, runs, task)
    to_store = {str(Path(p).resolve()): m for m, p in runs.items()}
    for arena in arena_runs:
        a = arena.results.arena
        names = {n: to_store.get(str(Path(p).resolve())) for n, p in (getattr(a, "runs", None) or {}).items()}
        records: list[Any] = []
        for r in arena.records:
            meta = r.sample.metadata
            x, y = (names.get(m) or (m if m in labels and not names else None)
                    for m in (meta.get("model_a"), meta.get("model_b")))
            if x and y and r.score is not None and task in (None, r.task.removeprefix("arena:")):
                records.append(_record(x, y, str(meta.get("sample_id")), dict(r.score.values)))
        if records:
            found.append((f"arena run {arena.path}", records))
    return found


def load_human(sources: Sequence[str], comp: Comparison, arena_runs: Sequence[RunLog] = (),
               n_boot: int = 1000, seed: int = 0) -> list[HumanBlock]:
    """One block per store or export; a `UsageError` (exit 2) for a source that is not one, or holds other runs.

    `n_boot` defaults to `annotate export`'s 1000 rounds, so a store shows the same CIs here as in its export."""
    from evalsuite.annotate import stats
    from evalsuite.annotate.export import summarize

    blocks = []
    for source in sources:
        view = _open(source)
        labels = _run_labels(view, source, comp)
        summary = getattr(view, "summary", None) or summarize(view, n_boot, seed)
        block = HumanBlock(source, view.mode, view.project.get("task"), summary, labels, _per_pair(view))
        if view.mode == "pairwise":
            for where, records in judge_verdicts(view, labels, comp, arena_runs):
                got = stats.judge_agreement(view, records, n_boot, seed)
                if not got.get("n"):
                    continue
                if block.judge is None:  # the first judge that saw these items; others are named, not pooled
                    block.judge, block.judge_from = got, [where]
                else:
                    block.judge_not_pooled.append(where)
        blocks.append(block)
    return blocks


# ---------------------------------------------------------------------------- formatting
def _ci(lo: Any, hi: Any, digits: int = 3) -> str:
    return f"[{fmt_number(lo, digits)}, {fmt_number(hi, digits)}]" if lo is not None and hi is not None else "–"


def _pair_ci(ci: Sequence[Any] | None) -> str:
    return _ci(*(list(ci or []) + [None, None])[:2])


def headline(block: HumanBlock) -> str:
    s = block.summary
    task = f", task {block.task}" if block.task else ""
    return (f"Human judgments: {block.source} ({block.mode}{task}): {s.get('judgments', 0)} judgments by "
            f"{len(s.get('annotators') or [])} annotator(s) ({', '.join(s.get('annotators') or []) or 'none yet'})"
            f" on {s.get('items')} items")


def tables(block: HumanBlock) -> list[Table]:
    """The block's tables: win rates / Likert means / ranks, agreement, and the judge against the humans."""
    s, out = block.summary, []
    if block.mode == "pairwise":
        rows = []
        for key, w in (s.get("win_rates") or {}).items():
            a, b = block.label(w["model_a"]), block.label(w["model_b"])
            pp = block.per_pair.get(key, {})
            rows.append([f"{a} vs {b}", fmt_number(w["win_rate_a"], 3), _ci(w.get("lo"), w.get("hi")),
                         str(w["wins_a"]), str(w["wins_b"]), str(w["ties"]), str(w["both_bad"]), str(w["n"]),
                         str(pp.get("items", "–")), str(pp.get("annotators", "–"))])
        left = s.get("left_rate") or {}
        note = (f"Win rate of the first model; a tie or both bad is half a win; 95% bootstrap CI over judgments. "
                f"Left answer chosen in {fmt_number(left.get('rate'), 3)} {_pair_ci(left.get('ci'))} of "
                f"{left.get('n', 0)} decided verdicts (0.5 = no side bias).") if left else ""
        out.append(Table("Win rates", ["pair", "win rate", "95% CI", "wins", "losses", "ties", "both bad",
                                       "judgments", "items", "annotators"], rows, note))
    elif block.mode == "likert":
        by_model = s.get("likert_by_model") or {}
        models = list(by_model)
        rows = [[c] + [f"{fmt_number(m.get('mean'), 2)} {_ci(m.get('lo'), m.get('hi'), 2)} n={m.get('n')}"
                       for m in (by_model[x].get(c, {}) for x in models)] for c in s.get("criteria") or []]
        out.append(Table("Likert means (1-5)", ["criterion"] + [block.label(m) for m in models], rows,
                         "Mean score with a 95% bootstrap CI over judgments."))
    else:
        rows = [[block.label(m), fmt_number(r.get("mean_rank"), 2), _ci(r.get("lo"), r.get("hi"), 2),
                 fmt_number(r.get("first"), 3), str(r.get("n"))] for m, r in (s.get("ranking") or {}).items()]
        out.append(Table("Ranks", ["run", "mean rank", "95% CI", "ranked first", "n"], rows,
                         "Rank 1 is best; 95% bootstrap CI over rankings."))
    agreement = s.get("agreement") or {}
    rows = [[k, str(p["n"]), f"{fmt_number(p.get('agreement'), 3)} {_pair_ci(p.get('agreement_ci'))}",
             f"{fmt_number(p.get('kappa'), 3)} {_pair_ci(p.get('kappa_ci'))}"]
            for k, p in (agreement.get("pairs") or {}).items()]
    note = "Cohen's kappa per pair of raters on the items both judged, 95% bootstrap CIs over items."
    every = agreement.get("all")
    if every and len(agreement.get("raters") or []) > 2:
        note += (f" All {len(agreement['raters'])} raters: Krippendorff's alpha "
                 f"{fmt_number(every.get('krippendorff_alpha'), 3)} {_pair_ci(every.get('alpha_ci'))} on "
                 f"{every.get('items')} items; Fleiss' kappa {fmt_number(every.get('fleiss_kappa'), 3)} "
                 f"{_pair_ci(every.get('fleiss_ci'))} on {every.get('fleiss_items')} items.")
    if not rows:
        note = "Inter-annotator agreement: needs two raters on the same items (one rater so far)."
    out.append(Table("Inter-annotator agreement", ["raters", "n", "agreement", "Cohen's kappa"], rows, note))
    if block.judge:
        j = block.judge
        wt, nt, hl = j.get("with_ties") or {}, j.get("without_ties") or {}, j.get("human_left_rate") or {}
        rows = [["human votes on items the judge saw", str(j["n"])],
                ["agreement (win / loss / tie)", f"{fmt_number(wt.get('agreement'), 3)} {_pair_ci(wt.get('agreement_ci'))}"],
                ["Cohen's kappa", f"{fmt_number(wt.get('kappa'), 3)} {_pair_ci(wt.get('kappa_ci'))}"],
                ["agreement without ties", f"{fmt_number(nt.get('agreement'), 3)} (n={nt.get('n', 0)})"],
                ["judge: inconsistent across orders", fmt_number(j.get("judge_position_inconsistency"), 3)],
                ["judge: chose the first-shown answer in both orders", fmt_number(j.get("judge_first_position_bias"), 3)],
                ["humans: chose the left answer", f"{fmt_number(hl.get('rate'), 3)} {_pair_ci(hl.get('ci'))} "
                                                  f"(n={hl.get('n', 0)})"]]
        out.append(Table("LLM judge vs humans", ["measure", "value"], rows,
                         "Judge verdicts from " + "; ".join(block.judge_from) + "." + (
                             " Other judges' verdicts on these items, not pooled with these: "
                             + "; ".join(block.judge_not_pooled) + "." if block.judge_not_pooled else "")))
    return out


def judge_line(block: HumanBlock) -> str:
    """The one line said when no judge verdict covers the store's items (pairwise stores only)."""
    if block.mode != "pairwise" or block.judge:
        return ""
    return ("LLM judge vs humans: no LLM-judge pairwise verdicts on these items in the compared runs or --arena "
            "runs (a winrate or mt_bench mode=pairwise task with baseline=the other run, or an arena of these runs)")


def text_lines(blocks: Sequence[HumanBlock]) -> list[str]:
    """The blocks as plain text for the terminal: aligned columns, one line per row."""
    out: list[str] = []
    for b in blocks:
        out += ["", headline(b)]
        for t in tables(b):
            out.append(f"  {t.title}:")
            if t.rows:
                widths = [max(len(str(r[i])) for r in [t.header] + t.rows) for i in range(len(t.header))]
                for r in [t.header] + t.rows:
                    out.append("    " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
            if t.note:
                out.append(f"    {t.note}")
        if line := judge_line(b):
            out.append(f"  {line}")
    return out


def markdown(blocks: Sequence[HumanBlock]) -> str:
    from evalsuite.reports.markdown import cell

    parts: list[str] = []
    for b in blocks:
        parts.append(f"#### {cell(headline(b))}\n")
        for t in tables(b):
            parts.append(f"**{t.title}**\n")
            if t.rows:
                parts.append("| " + " | ".join(cell(h) for h in t.header) + " |\n|"
                             + "|".join("---" for _ in t.header) + "|\n"
                             + "".join("| " + " | ".join(cell(c) for c in r) + " |\n" for r in t.rows))
            if t.note:
                parts.append(f"{t.note}\n")
        if line := judge_line(b):
            parts.append(f"{line}\n")
    return "\n".join(parts)
