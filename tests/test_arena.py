"""Arena: Bradley-Terry / Elo / win matrix / length control on synthetic battles, the `evalsuite
arena` command and the win-rate task against a real OpenAI-compatible judge server (stdlib, on
127.0.0.1), including the judge server going down mid-run."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from evalsuite.judges import arena

from evalsuite import rundir, runlog
from evalsuite.cli import main
from evalsuite.errors import JudgeHealthError
from evalsuite.records import GenerateRequest, Output, Sample, SampleRecord, Score, chat
from evalsuite.runner import RunConfig, score_outputs
from tests.judge_server import JudgeServer, judge_server  # noqa: F401 - pytest fixture

TRUE = {"m0": 0.0, "m1": 120.0, "m2": 240.0, "m3": 480.0}  # Elo-scale strengths


def simulate(rng: random.Random, n: int) -> list[arena.Battle]:
    """Battles drawn from the Bradley-Terry model itself (no ties: BT has no tie probability)."""
    battles = []
    for _ in range(n):
        a, b = rng.sample(sorted(TRUE), 2)
        p = 1 / (1 + 10 ** ((TRUE[b] - TRUE[a]) / 400))
        battles.append((a, b, float(rng.random() < p)))
    return battles


def test_bradley_terry_recovers_order_and_its_cis_cover_the_truth() -> None:
    rng = random.Random(1)
    centred = {m: v - sum(TRUE.values()) / len(TRUE) + arena.INIT for m, v in TRUE.items()}
    covered = checks = 0
    for sim in range(30):
        ratings = arena.bradley_terry(simulate(rng, 600), n_boot=100, seed=sim)
        assert sorted(ratings, key=lambda m: ratings[m]["rating"]) == sorted(TRUE, key=TRUE.get)
        for m, r in ratings.items():
            assert r["lo"] <= r["rating"] <= r["hi"]
            covered += r["lo"] <= centred[m] <= r["hi"]
            checks += 1
    assert covered / checks >= 0.85  # nominal 95%; 120 checks (4 per simulation, correlated)


def test_ties_only_give_equal_ratings_and_half_win_rates() -> None:
    battles = [("a", "b", 0.5), ("b", "c", 0.5), ("a", "c", 0.5)] * 10
    ratings = arena.bradley_terry(battles, n_boot=20)
    assert all(abs(r["rating"] - arena.INIT) < 1e-6 for r in ratings.values())
    assert arena.win_matrix(battles)["a"] == {"b": 0.5, "c": 0.5}


def test_win_matrix_and_elo() -> None:
    battles = [("a", "b", 1.0), ("a", "b", 1.0), ("b", "a", 1.0), ("a", "c", 1.0)] * 5
    wm = arena.win_matrix(battles)
    assert wm["a"]["b"] == pytest.approx(2 / 3) and wm["b"]["a"] == pytest.approx(1 / 3)
    assert wm["a"]["c"] == 1.0 and wm["b"]["c"] is None  # b and c never met
    elo = arena.elo(battles)
    assert elo["a"] > elo["b"] and elo["a"] > elo["c"]
    assert sum(elo.values()) == pytest.approx(3 * arena.INIT)  # Elo is zero-sum


def test_a_model_that_always_wins_gets_a_finite_rating() -> None:
    ratings = arena.bradley_terry([("a", "b", 1.0)] * 50, n_boot=10)
    assert arena.INIT < ratings["a"]["rating"] < 3000 and ratings["b"]["rating"] < arena.INIT


def test_length_controlled_win_rate_removes_a_pure_length_effect() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    diffs = rng.normal(150, 200, 800)  # the model is usually longer than the baseline...
    sd = diffs.std()
    wins = (rng.random(800) < 1 / (1 + np.exp(-2.0 * np.tanh(diffs / sd)))).astype(float)  # ...and only that helps
    lc = arena.length_controlled_winrate(wins, diffs)
    assert wins.mean() > 0.65 and abs(lc["value"] - 0.5) < 0.08 and lc["length_coef"] > 1
    better = (rng.random(800) < 0.7).astype(float)  # a model better at any length keeps its edge
    assert arena.length_controlled_winrate(better, diffs)["value"] > 0.6


# ---------------------------------------------------------------------------- the arena command
PROMPTS = ["Name a fruit.", "Say hello."]


def write_run(root: Path, model: str, answer_len: int, task: str = "winrate") -> Path:
    """A run dir as `evalsuite run` leaves it: this model answers every prompt with `answer_len` chars."""
    out = root / model
    out.mkdir(parents=True)
    records = [SampleRecord(task, Sample(str(i), p), [GenerateRequest(chat(p))],
                            [Output(texts=[(model[0] * answer_len)])], Score({})) for i, p in enumerate(PROMPTS)]
    writer = rundir.RunWriter(out, runlog.RunResults(model=runlog.ModelInfo(name=model)))
    writer.add_task(task, runlog.TaskResult(n=len(records)), records)
    writer.finish("complete")
    return out


def run_arena(server: JudgeServer, runs: list[Path], tmp_path: Path, *extra: str, code: int = 0) -> dict[str, Any]:
    args = ",".join(f"{k}={v}" for k, v in server.judge_args().items())
    before = set((tmp_path / "out").glob("*"))
    got = main(["arena", *map(str, runs), "--task", "winrate", "--judge", "openai:judge", "--judge-args", args,
                "--output-dir", str(tmp_path / "out"), "--cache-path", str(tmp_path / "calls.sqlite"),
                "--bootstrap", "50", *extra])
    assert got == code
    (new,) = set((tmp_path / "out").glob("*")) - before
    return {"results": json.loads((new / rundir.RESULTS).read_text()), "log": rundir.load_run(new)}


def test_arena_rates_every_pair_and_rerun_hits_the_cache(judge_server: JudgeServer, tmp_path: Path,  # noqa: F811
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    runs = [write_run(tmp_path, name, n) for name, n in (("short", 5), ("medium", 20), ("long", 60))]
    first = run_arena(judge_server, runs, tmp_path)
    printed = capsys.readouterr().out
    assert "win rate, row vs column" in printed  # the win-rate matrix is shown, not only the ratings
    rows = {line.split()[1]: line.split()[2:] for line in printed.splitlines()
            if line.startswith("│") and line.split()[1] in ("long", "short") and "." in line}
    assert rows["long"][:5] == ["│", "–", "│", "1.00", "│"] and rows["short"][:5] == ["│", "0.00", "│", "0.00", "│"]
    a = first["results"]["arena"]
    assert judge_server.answered == 3 * len(PROMPTS) * 2  # 3 pairs x shared prompts x both orders
    assert sorted(a["ratings"], key=lambda m: a["ratings"][m]["rating"]) == ["short", "medium", "long"]
    assert all(r["lo"] <= r["rating"] <= r["hi"] for r in a["ratings"].values())
    assert a["win_matrix"]["long"]["short"] == 1.0 and a["win_matrix"]["short"]["medium"] == 0.0
    assert a["battles"] == 6 and a["judge_errors"] == 0 and a["position_inconsistency"]["value"] == 0.0
    assert first["results"]["arena"]["judge"]["judges"]["PairwiseJudge"]["template"] == "evalsuite/pairwise"
    battle = first["log"].records[0]
    assert battle.score.explanation["model"] == "judge" and len(json.loads(battle.score.explanation["verdicts"])) == 2
    second = run_arena(judge_server, runs, tmp_path)
    assert judge_server.answered == 12  # the re-run asked the judge nothing
    assert second["results"]["arena"]["ratings"] == a["ratings"]


def test_position_biased_judge_yields_ties(judge_server: JudgeServer, tmp_path: Path) -> None:  # noqa: F811
    judge_server.policy = "first"  # always "[[A]]": flips with the order
    runs = [write_run(tmp_path, name, n) for name, n in (("short", 5), ("long", 60))]
    a = run_arena(judge_server, runs, tmp_path)["results"]["arena"]
    assert a["position_inconsistency"]["value"] == 1.0 and a["win_matrix"]["long"]["short"] == 0.5
    assert abs(a["ratings"]["long"]["rating"] - a["ratings"]["short"]["rating"]) < 1e-6


def test_judge_server_down_mid_run_then_rerun_fills_only_the_gaps(judge_server: JudgeServer, tmp_path: Path) -> None:  # noqa: F811
    runs = [write_run(tmp_path, name, n) for name, n in (("short", 5), ("medium", 20), ("long", 60))]
    judge_server.fail_after = 6  # answers 6 of the 12 judge calls, then HTTP 500 for good
    broken = run_arena(judge_server, runs, tmp_path, "--max-judge-errors", "1")
    a = broken["results"]["arena"]
    assert broken["results"]["status"] == "complete"  # the run finished and says what it could not judge
    assert judge_server.failed == 6 * 3  # each failed call was tried 1 + max_retries(2) times
    assert a["judge_errors"] == 3 and a["battles"] == 3
    errors = [r for r in broken["log"].records if r.error]
    assert len(errors) == 3 and all("HTTP 500" in r.error and r.score.values["win_a"] is None for r in errors)
    judge_server.fail_after = None  # the server is back
    fixed = run_arena(judge_server, runs, tmp_path)
    assert judge_server.answered == 12  # exactly the 6 missing judgments were asked
    assert fixed["results"]["arena"]["judge_errors"] == 0 and fixed["results"]["arena"]["battles"] == 6


def test_arena_with_a_broken_judge_fails(judge_server: JudgeServer, tmp_path: Path,  # noqa: F811
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Every verdict unparseable: exit 1 with one line and the first raw verdict; the run is kept.
    Catches: an arena of judge errors that exits 0 with a table of `-`."""
    judge_server.policy = "garbage"
    runs = [write_run(tmp_path, name, n) for name, n in (("short", 5), ("long", 60))]
    kept = run_arena(judge_server, runs, tmp_path, code=1)
    err = capsys.readouterr().err
    assert "arena winrate: 100% of judgments were errors" in err and "Both answers have merits" in err
    assert kept["results"]["arena"]["judge_errors"] == 2 and kept["results"]["status"] == "complete"


# ---------------------------------------------------------------------------- the winrate task
def _winrate_setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": "t0", "instruction": "Rewrite politely.", "instances": [{"input": "Give me that.", "output": "May I?"}]},
            {"id": "t1", "instruction": "Name a planet.", "instances": [{"input": "", "output": "Mars"}]},
            {"id": "t2", "prompt": "Count to three."}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = tmp_path / "base.jsonl"
    base.write_text("".join(json.dumps({"id": i, "output": "ok"}) + "\n" for i in ("t0", "t1", "t2")))
    cand = tmp_path / "cand.jsonl"
    cand.write_text("".join(json.dumps({"id": i, "output": o}) + "\n"
                            for i, o in (("t0", "Could you please pass that?"), ("t1", "Mars, the red planet"), ("t2", "1"))))
    return prompts, base, cand


def test_winrate_against_a_baseline_run(judge_server: JudgeServer, tmp_path: Path) -> None:  # noqa: F811
    prompts, base, cand = _winrate_setup(tmp_path)

    def cfg(task_args: dict[str, Any], cache: str) -> RunConfig:
        return RunConfig(tasks=["winrate"], task_args={"prompts": str(prompts), **task_args}, output_dir=str(tmp_path / "runs"),
                         cache_path=str(tmp_path / cache), judge="openai:judge", judge_args=judge_server.judge_args())

    baseline_run = score_outputs(cfg({}, "a.sqlite"), outputs=str(base))  # outputs only: no baseline to beat yet
    assert judge_server.answered == 0
    run = score_outputs(cfg({"baseline": str(baseline_run)}, "a.sqlite"), outputs=str(cand))
    task = json.loads((run / rundir.RESULTS).read_text())["tasks"]["winrate"]
    m = task["metrics"]
    assert m["win"]["value"] == pytest.approx(2 / 3) and m["inconsistent"]["value"] == 0.0  # "1" is shorter than "ok"
    assert m["length_diff"]["n"] == 3 and "lc_win_rate" in m and task["judge"]["model"] == "judge"
    assert "Give me that." in judge_server.prompts[0]  # the instance input is part of the prompt
    judge_server.policy = "garbage"  # verdicts nobody can parse: judge errors, not scores, and the run fails
    with pytest.raises(JudgeHealthError, match=r"task winrate: 100% of judge verdicts were errors \(n=3\), over the "
                                               r"20% allowed; first failed verdict: .*Both answers have merits"):
        score_outputs(cfg({"baseline": str(baseline_run)}, "b.sqlite"), outputs=str(cand))
    accepting = cfg({"baseline": str(baseline_run)}, "b.sqlite")
    accepting.max_judge_errors = 1.0
    bad = score_outputs(accepting, outputs=str(cand))
    bm = json.loads((bad / rundir.RESULTS).read_text())["tasks"]["winrate"]["metrics"]
    assert bm["win"]["n"] == 0 and bm["judge_error"]["value"] == 1.0
    rec = rundir.load_run(bad).records[0]
    assert rec.score.values["win"] is None and "no readable verdict" in rec.score.explanation["win.error"]


def test_winrate_reads_the_self_instruct_prompts(shared_data: Path) -> None:
    from evalsuite.tasks.winrate import WinRate

    from evalsuite.task import TaskContext

    if not (shared_data / "self_instruct" / "user_oriented_instructions.jsonl").is_file():
        pytest.skip(f"no self_instruct data under {shared_data}")
    samples = WinRate().load(TaskContext(data_dir=shared_data))
    assert len(samples) == 252 and len({s.id for s in samples}) == 252
    first = samples[0]
    assert first.id == "user_oriented_task_0" and first.metadata["motivation_app"] == "Grammarly"
    assert "If you have any questions about my rate" in str(first.input)  # the instance input follows the instruction


def _score_cli(tmp_path: Path, server: JudgeServer, outputs: Path, task_args: str, *extra: str) -> int:
    args = ",".join(f"{k}={v}" for k, v in server.judge_args().items())
    return main(["score", "--tasks", "winrate", "--outputs", str(outputs), "--task-args", task_args, "--judge", "openai:judge",
                 "--judge-args", args, "--output-dir", str(tmp_path / "runs"), "--cache-path", str(tmp_path / "calls.sqlite"), *extra])


def _newest_run(tmp_path: Path) -> Path:
    return max((tmp_path / "runs").iterdir(), key=lambda p: p.stat().st_mtime_ns)


def test_judge_samples_flag_on_run_and_score(judge_server: JudgeServer, tmp_path: Path,  # noqa: F811
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from evalsuite.cli import _config, build_parser

    prompts, base, cand = _winrate_setup(tmp_path)
    assert _score_cli(tmp_path, judge_server, base, f"prompts={prompts}") == 0
    baseline = _newest_run(tmp_path)
    task_args = f"prompts={prompts},baseline={baseline}"
    assert _score_cli(tmp_path, judge_server, cand, task_args, "--judge-samples", "3") == 0
    assert judge_server.answered == 3 * 2 * 3  # 3 prompts x both orders x 3 samples
    judge = json.loads((_newest_run(tmp_path) / rundir.RESULTS).read_text())["tasks"]["winrate"]["config"]["judge"]
    assert judge["judges"]["PairwiseJudge"]["samples"] == 3 and judge["judges"]["PairwiseJudge"]["temperature"] == 0.7
    # the task's own judge_samples wins over the run-wide flag; its 2 seeds were already asked (cache)
    assert _score_cli(tmp_path, judge_server, cand, task_args + ",judge_samples=2", "--judge-samples", "3") == 0
    judge = json.loads((_newest_run(tmp_path) / rundir.RESULTS).read_text())["tasks"]["winrate"]["config"]["judge"]
    assert judge["judges"]["PairwiseJudge"]["samples"] == 2 and judge_server.answered == 18
    run_args = build_parser().parse_args(["run", "--model", "m", "--tasks", "mt_bench", "--judge-samples", "4"])
    assert _config(run_args).options["judge_samples"] == 4  # `run` forwards it the same way
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        _score_cli(tmp_path, judge_server, cand, task_args, "--judge-samples", "0")
    assert exc.value.code == 2 and "--judge-samples takes a whole number >= 1, got '0'" in capsys.readouterr().err
    assert _score_cli(tmp_path, judge_server, cand, task_args + ",judge_samples=abc") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "judge_samples must be a whole number" in err and "Traceback" not in err
