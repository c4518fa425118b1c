"""`evalsuite compare --human`: human win rates, agreement and judge-human agreement beside a comparison.

The store is built the way annotators build one: the real annotate app on 127.0.0.1, votes POSTed to
/api/submit over HTTP, over two run dirs written by the real writer. The candidate run holds a
winrate judge's verdicts against the baseline run, so the judge can be measured against the humans.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from evalsuite.annotate import sources, stats
from evalsuite.annotate.export import write_export
from evalsuite.annotate.store import Store
from evalsuite.cli import main
from evalsuite.reports.compare import compare, load_runs
from evalsuite.reports.human import load_human
from evalsuite.rundir import load_run
from tests.fixtures_runs import SynthTask, write_run
from tests.test_annotate_api import serving

N = 8
BASE, SFT = "base-model", "sft-model"
# per sample, who each annotator says won ("both_bad" and "tie" are half a win)
VOTES = {"ann": [SFT, SFT, BASE, "tie", SFT, BASE, "both_bad", SFT],
         "bob": [SFT, BASE, BASE, "tie", SFT, BASE, SFT, SFT]}
# the judge's verdict for sft-model per sample (winrate's `win`), and its position-bias flags
JUDGE_WIN = [1.0, 1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 1.0]
INCONSISTENT = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
FIRST_BIAS = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def make_runs(tmp: Path, judged: bool = True) -> tuple[Path, Path]:
    """A baseline winrate run (outputs only) and a candidate run the judge compared with it."""
    ids = [f"winrate-{i}" for i in range(N)]
    base = write_run(tmp / "base", {"winrate": SynthTask({"judge_error": [0.0] * N}, ids=ids,
                                                         outputs=[f"Base answer {i}." for i in range(N)])}, model=BASE)
    scores = {"win": JUDGE_WIN, "inconsistent": INCONSISTENT, "first_position_bias": FIRST_BIAS} if judged \
        else {"judge_error": [0.0] * N}
    config = {"num_fewshot": 0, **({"baseline": str(base), "judge": {"model": "judge-model"}} if judged else {})}
    sft = write_run(tmp / "sft", {"winrate": SynthTask(scores, ids=ids, config=config,
                                                       outputs=[f"Tuned answer {i}." for i in range(N)])}, model=SFT)
    return base, sft


def annotate(store: Store, votes: dict[str, list[str]]) -> None:
    """Every annotator judges every item through the HTTP API, clicking the side their winner was shown on."""
    with serving(store) as url, httpx.Client(base_url=url) as c:
        for annotator, verdicts in votes.items():
            while (item := c.get("/api/next", params={"annotator": annotator}).json()["item"]) is not None:
                full = store.item(item["id"])
                want = verdicts[int(full["sample_id"].rsplit("-", 1)[1])]
                left = full["answers"][store.shown_order(full, annotator)[0]]["model"]
                choice = want if want in ("tie", "both_bad") else "A" if want == left else "B"
                r = c.post("/api/submit", json={"annotator": annotator, "item": item["id"],
                                                "verdict": {"choice": choice}, "elapsed_ms": 900})
                assert r.status_code == 200, r.text
        assert c.get("/api/progress").json()["annotators"]["ann"]["done"] == N


def pairwise_store(tmp: Path, runs: tuple[Path, Path], votes: dict[str, list[str]] = VOTES) -> Store:
    items, origin = sources.from_runs([str(p) for p in runs], "pairwise")
    store = Store.create(tmp / "store.sqlite", {"name": "winrate", "mode": "pairwise", "criteria": [], "labels": [],
                                                **origin}, items)
    annotate(store, votes)
    return store


def outcome(v: str) -> str:
    return v if v in ("tie", "both_bad") else f"win:{v}"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Store]:
    base, sft = make_runs(tmp_path)
    return base, sft, pairwise_store(tmp_path, (base, sft))


def test_win_rate_ci_and_kappa_are_the_submitted_votes(setup: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    """The block's win rate is the share of base-model wins over every HTTP vote (tie/both bad = half), its
    CI the seeded bootstrap over those votes, the annotators' kappa sklearn's on their outcomes; the
    terminal output prints them. Catches a vote mapped through the wrong side, a pair or annotator count
    off, or a CI not over the judgments."""
    base, sft, store = setup
    comp = compare(load_runs([base, sft]), n_boot=200)
    (block,) = load_human([str(store.path)], comp)
    values = np.array([{BASE: 1.0, SFT: 0.0}.get(v, 0.5) for a in ("ann", "bob") for v in VOTES[a]])
    wr = block.summary["win_rates"][f"{BASE} vs {SFT}"]
    assert wr["win_rate_a"] == pytest.approx(values.mean()) == pytest.approx(6.5 / 16)
    lo, hi = stats.bootstrap(lambda i: float(values[i].mean()), len(values), 1000, 0)
    assert (wr["lo"], wr["hi"]) == (pytest.approx(lo), pytest.approx(hi)) and 0 <= lo < wr["win_rate_a"] < hi <= 1
    assert (wr["wins_a"], wr["wins_b"], wr["ties"], wr["both_bad"], wr["n"]) == (5, 8, 2, 1, 16)
    assert block.per_pair[f"{BASE} vs {SFT}"] == {"items": N, "annotators": 2}
    kappa = cohen_kappa_score([outcome(v) for v in VOTES["ann"]], [outcome(v) for v in VOTES["bob"]])
    pair = block.summary["agreement"]["pairs"]["ann | bob"]
    assert pair["kappa"] == pytest.approx(kappa) and pair["agreement"] == pytest.approx(6 / 8)
    assert main(["compare", str(base), str(sft), "--n-boot", "200", "--human", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert f"Human judgments: {store.path} (pairwise, task winrate): 16 judgments by 2 annotator(s)" in out
    row = next(line.split() for line in out.splitlines() if line.strip().startswith(f"{BASE} vs {SFT}  0."))
    assert row[3:5] == ["0.406", f"[{lo:.3f},"] and row[5] == f"{hi:.3f}]" and row[6:] == "5 8 2 1 16 8 2".split()
    assert "ann | bob  8  0.750" in out and f"{kappa:.3f}" in out


def test_judge_human_agreement_from_the_winrate_task(setup: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    """The candidate's winrate verdicts (its `baseline` is the other run) against every human vote:
    agreement 12/16 and sklearn's kappa on the same outcomes, the judge's position-bias rates over
    the matched votes. Catches verdicts read for the wrong model (the judge's `win` is the candidate's)."""
    base, sft, store = setup
    comp = compare(load_runs([base, sft]), n_boot=200)
    (block,) = load_human([str(store.path)], comp)
    j = block.judge
    assert j is not None and j["n"] == 16
    judge = [SFT if w == 1.0 else BASE if w == 0.0 else "tie" for w in JUDGE_WIN]
    human = [v if v != "both_bad" else "tie" for a in ("ann", "bob") for v in VOTES[a]]
    assert j["with_ties"]["agreement"] == pytest.approx(12 / 16)
    assert j["with_ties"]["kappa"] == pytest.approx(cohen_kappa_score(human, judge * 2))
    assert j["judge_position_inconsistency"] == pytest.approx(4 / 16)
    assert j["judge_first_position_bias"] == pytest.approx(2 / 16)
    assert block.judge_from == [f"{sft} task winrate (vs {base})"]
    assert main(["compare", str(base), str(sft), "--n-boot", "200", "--human", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "LLM judge vs humans:" in out and re.search(r"agreement \(win / loss / tie\) +0\.750 \[", out)


def test_no_judge_verdicts_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs without judge verdicts: the human tables, and one line saying there is no judge to compare.
    Catches a judge table built from nothing, or the line left out."""
    base, sft = make_runs(tmp_path, judged=False)
    store = pairwise_store(tmp_path, (base, sft))
    assert main(["compare", str(base), str(sft), "--n-boot", "200", "--human", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "Win rates:" in out and "human votes on items the judge saw" not in out
    assert sum("no LLM-judge pairwise verdicts on these items" in line for line in out.splitlines()) == 1


def test_export_dir_gives_the_same_block_and_markdown(setup: tuple, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`annotate export`'s run dir stands in for its store: same win rate, CI, kappa and judge agreement;
    the Markdown output carries the block. Catches an export read back with the wrong judgments."""
    base, sft, store = setup
    exported = write_export(store, tmp_path / "exports")
    comp = compare(load_runs([base, sft]), n_boot=200)
    (a,), (b,) = load_human([str(store.path)], comp), load_human([str(exported)], comp)
    assert a.summary["win_rates"] == b.summary["win_rates"] and a.per_pair == b.per_pair
    assert a.summary["agreement"]["pairs"] == b.summary["agreement"]["pairs"]
    assert a.judge == b.judge and a.judge is not None
    results = json.loads((exported / "results.json").read_text())
    del results["config"]["models"]  # an export written before the config named the models
    (exported / "results.json").write_text(json.dumps(results))
    (c,) = load_human([str(exported)], comp)
    assert c.labels == b.labels == {BASE: BASE, SFT: SFT} and c.judge == a.judge
    assert main(["compare", str(base), str(sft), "--n-boot", "200", "--format", "markdown",
                 "--human", str(exported)]) == 0
    md = capsys.readouterr().out
    assert "**Win rates**" in md and f"| {BASE} vs {SFT} | 0.406 |" in md and "**LLM judge vs humans**" in md


def test_html_report_has_the_block(setup: tuple, tmp_path: Path) -> None:
    """`--html` writes the Human judgments section (nav link, win rate, kappa, judge table), names escaped.
    Catches the section dropped from the template or rendered unescaped."""
    base, sft, store = setup
    report = tmp_path / "r.html"
    assert main(["compare", str(base), str(sft), "--n-boot", "200", "--human", str(store.path),
                 "--html", str(report)]) == 0
    html = report.read_text()
    assert '<a href="#human">Human judgments</a>' in html and '<section id="human">' in html
    assert f"<td>{BASE} vs {SFT}</td><td class=\"num\">0.406</td>" in html
    assert "<h4>LLM judge vs humans</h4>" in html and "ann | bob" in html
    assert main(["compare", str(base), str(sft), "--n-boot", "200", "--html", str(report)]) == 0
    assert '<section id="human">' not in report.read_text()


def test_likert_and_ranking_stores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Likert store shows each criterion's mean per run (in run labels), a ranking store mean ranks.
    Catches criteria or runs swapped."""
    base, sft = make_runs(tmp_path, judged=False)
    items, origin = sources.from_runs([str(base), str(sft)], "likert")
    lik = Store.create(tmp_path / "l.sqlite", {"name": "winrate", "mode": "likert", "criteria": ["helpfulness",
                       "accuracy"], "labels": [], **origin}, items)
    for it in lik.items():
        good = it["answers"][0]["model"] == SFT
        lik.submit("ann", it["id"], {"scores": {"helpfulness": 5 if good else 2, "accuracy": 4 if good else 1}})
    rank_items, rank_origin = sources.from_runs([str(base), str(sft)], "ranking")
    rank = Store.create(tmp_path / "r.sqlite", {"name": "winrate", "mode": "ranking", **rank_origin}, rank_items)
    for it in rank.items():
        order = rank.shown_order(it, "ann")
        slots = {it["answers"][k]["model"]: "AB"[pos] for pos, k in enumerate(order)}
        rank.submit("ann", it["id"], {"ranking": [slots[SFT], slots[BASE]]})
    assert main(["compare", str(base), str(sft), "--n-boot", "200", "--human", str(lik.path),
                 "--human", str(rank.path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["criterion"][1:] == [BASE, SFT]
    assert lines["helpfulness"][1] == "2.00" and lines["helpfulness"][5] == "5.00"
    assert lines["accuracy"][1] == "1.00" and lines["accuracy"][5] == "4.00"
    assert lines[SFT][1:2] == ["1.00"] and lines[BASE][1:2] == ["2.00"]


def test_three_annotators_report_krippendorff_alpha(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With three annotators the block adds Krippendorff's alpha over all of them (the krippendorff package).
    Catches alpha left out, or computed on two raters only."""
    import krippendorff

    base, sft = make_runs(tmp_path, judged=False)
    votes = {**VOTES, "cy": [SFT, SFT, BASE, BASE, SFT, BASE, SFT, SFT]}
    store = pairwise_store(tmp_path, (base, sft), votes)
    comp = compare(load_runs([base, sft]), n_boot=200)
    (block,) = load_human([str(store.path)], comp)
    codes = {c: i for i, c in enumerate(sorted({outcome(v) for vs in votes.values() for v in vs}))}
    alpha = krippendorff.alpha(reliability_data=[[codes[outcome(v)] for v in votes[a]] for a in sorted(votes)],
                               level_of_measurement="nominal")
    assert block.summary["agreement"]["all"]["krippendorff_alpha"] == pytest.approx(alpha)
    assert main(["compare", str(base), str(sft), "--n-boot", "200", "--human", str(store.path)]) == 0
    assert f"All 3 raters: Krippendorff's alpha {alpha:.3f}" in capsys.readouterr().out


def test_a_store_of_other_runs_is_one_line_and_exit_2(setup: tuple, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A store made from other runs, a missing path and a file that is no store: one line naming the store
    (and which runs it holds), exit 2. Catches a store shown next to runs it never judged."""
    base, sft, store = setup
    other_base, other_sft = make_runs(tmp_path / "other")
    assert main(["compare", str(other_base), str(other_sft), "--human", str(store.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--human {store.path}: the store holds judgments of" in err
    assert str(base.resolve()) in err and str(sft.resolve()) in err and "not of the compared runs" in err
    assert main(["compare", str(base), str(sft), "--human", str(tmp_path / "nope.sqlite")]) == 2
    assert "no such annotation store or export directory" in capsys.readouterr().err
    junk = tmp_path / "junk.sqlite"
    junk.write_text(json.dumps({"not": "a store"}))
    assert main(["compare", str(base), str(sft), "--human", str(junk)]) == 2
    assert "is not an annotation store" in capsys.readouterr().err
    assert main(["compare", str(base), str(sft), "--human", str(base)]) == 2
    assert "not an `evalsuite annotate export` run dir" in capsys.readouterr().err


def arena_dir(tmp: Path, runs: dict[str, Path], verdicts: list[float]) -> Path:
    """An arena run as `evalsuite arena` writes it: ratings, the run dir of each contestant, and one record per
    battle; odd samples put the candidate first (model_a), as the arena's pairs can."""
    from evalsuite import rundir, runlog
    from evalsuite.records import Sample, SampleRecord, Score

    ratings = {m: {"rating": 1000.0, "lo": 990.0, "hi": 1010.0} for m in runs}
    results = runlog.RunResults(kind="arena", model=runlog.ModelInfo(name="arena"), arena=runlog.Arena(
        ratings=ratings, runs={m: str(p) for m, p in runs.items()}))
    path = tmp / "arena"
    path.mkdir()
    writer = rundir.RunWriter(path, results)
    records = []
    for i, win_sft in enumerate(verdicts):
        a, b, win_a = (BASE, SFT, 1.0 - win_sft) if i % 2 == 0 else (SFT, BASE, win_sft)
        meta = {"model_a": a, "model_b": b, "sample_id": f"winrate-{i}", "turn": 1}
        records.append(SampleRecord("arena:winrate", Sample(f"{a} vs {b} | winrate-{i} | turn 1", "q", metadata=meta),
                                    [], [], Score({"win_a": win_a, "inconsistent": 0.0, "first_position_bias": 0.0})))
    writer.add_task("arena:winrate", runlog.TaskResult(n=len(records)), records)
    writer.finish("complete")
    return path


def test_judge_verdicts_from_an_arena_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--arena RUN` of the same run dirs: its battles (either model first) are the judge's verdicts. A judge
    that agrees with ann everywhere agrees on 8 of ann's 8 and 6 of bob's 8. Catches an arena battle read
    for the wrong model, or an arena of other runs taken for this one."""
    base, sft = make_runs(tmp_path, judged=False)
    store = pairwise_store(tmp_path, (base, sft))
    ann = [{SFT: 1.0, BASE: 0.0}.get(v, 0.5) for v in VOTES["ann"]]
    arena = arena_dir(tmp_path, {BASE: base, SFT: sft}, ann)
    comp = compare(load_runs([base, sft]), n_boot=200)
    (block,) = load_human([str(store.path)], comp, [load_run(arena)])
    assert block.judge is not None and block.judge["n"] == 16
    assert block.judge["with_ties"]["agreement"] == pytest.approx(14 / 16)
    assert block.judge_from == [f"arena run {arena}"]
    assert main(["compare", str(base), str(sft), "--n-boot", "200", "--human", str(store.path),
                 "--arena", str(arena)]) == 0
    assert re.search(r"agreement \(win / loss / tie\) +0\.875 \[", capsys.readouterr().out)
    other_base, other_sft = make_runs(tmp_path / "other", judged=False)
    stranger = arena_dir(tmp_path / "other", {BASE: other_base, SFT: other_sft}, ann)
    (block,) = load_human([str(store.path)], comp, [load_run(stranger)])
    assert block.judge is None


def test_two_judges_are_not_pooled(tmp_path: Path) -> None:
    """The runs' winrate judge and an arena judge on the same items: the agreement is the first judge's alone
    (12/16, as without the arena), and the arena is named as not pooled. Catches two judges' verdicts averaged
    per item, where one judge's A and the other's B would read as a tie that neither gave."""
    base, sft = make_runs(tmp_path)
    store = pairwise_store(tmp_path, (base, sft))
    ann = [{SFT: 1.0, BASE: 0.0}.get(v, 0.5) for v in VOTES["ann"]]
    arena = arena_dir(tmp_path, {BASE: base, SFT: sft}, ann)
    comp = compare(load_runs([base, sft]), n_boot=200)
    (alone,) = load_human([str(store.path)], comp)
    (block,) = load_human([str(store.path)], comp, [load_run(arena)])
    assert block.judge == alone.judge and block.judge["with_ties"]["agreement"] == pytest.approx(12 / 16)
    assert block.judge_from == [f"{sft} task winrate (vs {base})"]
    assert block.judge_not_pooled == [f"arena run {arena}"]


def test_mt_bench_turns_are_averaged_into_one_verdict(tmp_path: Path) -> None:
    """MT-Bench pairwise stores one verdict per turn (`turn_N`, `turn_N.inconsistent`): a sample the judge
    gave the candidate in turn 1 and the baseline in turn 2 is a tie against the humans. Catches the
    turns read as separate items, or the sample mean `win` used without the per-turn position flags."""
    ids = [f"mt-{i}" for i in range(4)]
    base = write_run(tmp_path / "base", {"mt_bench": SynthTask({"judge_error": [0.0] * 4}, ids=ids)}, model=BASE)
    scores = {"win": [0.5, 1.0, 0.0, 0.5], "turn_1": [1.0, 1.0, 0.0, 0.5], "turn_2": [0.0, 1.0, 0.0, 0.5],
              "turn_1.inconsistent": [0.0, 0.0, 1.0, 1.0], "turn_2.inconsistent": [0.0, 0.0, 1.0, 0.0]}
    sft = write_run(tmp_path / "sft", {"mt_bench": SynthTask(scores, ids=ids, config={
        "num_fewshot": 0, "mode": "pairwise", "baseline": str(base)})}, model=SFT)
    items, origin = sources.from_runs([str(base), str(sft)], "pairwise")
    store = Store.create(tmp_path / "s.sqlite", {"name": "mt", "mode": "pairwise", **origin}, items)
    human = {"mt-0": "tie", "mt-1": SFT, "mt-2": SFT, "mt-3": "tie"}  # agrees on mt-0, mt-1, mt-3
    for it in store.items():
        want = human[it["sample_id"]]
        left = it["answers"][store.shown_order(it, "ann")[0]]["model"]
        store.submit("ann", it["id"], {"choice": want if want == "tie" else "A" if want == left else "B"})
    comp = compare(load_runs([base, sft]), n_boot=100)
    (block,) = load_human([str(store.path)], comp)
    assert block.judge is not None and block.judge["n"] == 4
    assert block.judge["with_ties"]["agreement"] == pytest.approx(3 / 4)
    assert block.judge["judge_position_inconsistency"] == pytest.approx((0 + 0 + 1 + 0.5) / 4)


def test_report_of_one_run_with_a_likert_store(tmp_path: Path) -> None:
    """`evalsuite report RUN --human STORE`: one run's report carries its Likert means. Catches `report`
    dropping --human, or a one-run comparison's labels not matched to the store."""
    base, _ = make_runs(tmp_path, judged=False)
    items, origin = sources.from_runs([str(base)], "likert")
    store = Store.create(tmp_path / "l.sqlite", {"name": "winrate", "mode": "likert", "criteria": ["accuracy"],
                                                 "labels": [], **origin}, items)
    for n, it in enumerate(store.items()):
        store.submit("ann", it["id"], {"scores": {"accuracy": 1 + n % 5}})
    out = tmp_path / "one.html"
    assert main(["report", str(base), "--human", str(store.path), "-o", str(out), "--n-boot", "100"]) == 0
    html = out.read_text()
    mean = sum(1 + n % 5 for n in range(N)) / N
    assert "<h4>Likert means (1-5)</h4>" in html and f"<td>accuracy</td><td class=\"num\">{mean:.2f} [" in html
    assert f"<th>{BASE}</th>" in html.split('<section id="human">')[1]
