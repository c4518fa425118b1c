"""Run directories for the HTML report tests: a comparison, one run, and a trainer run with eval runs.

Built with tests/fixtures_runs.py (the real writer); sample details that `SynthTask` does not set
(score explanations, IFEval-style per-instruction answers, finish reasons, cache flags) are added by
rewriting samples.jsonl through `SampleRecord`, the same way `evalsuite score` rewrites it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from evalsuite import rundir, runlog, stats
from evalsuite.records import SampleRecord
from tests.fixtures_runs import SynthTask, arena, binary, flip, training, write_run

INSTRUCTIONS = ["punctuation:no_comma", "length_constraints:number_words", "detectable_format:title",
                "change_case:english_lowercase"]
N = 150


def patch_samples(run: Path, fn: Callable[[SampleRecord, int], None]) -> None:
    """Apply `fn(record, index in its task)` to every record of the run and write them back."""
    path = run / rundir.SAMPLES
    records = rundir._read_samples(path)
    for r in records:
        fn(r, int(r.sample.id.rsplit("-", 1)[1]))  # the sample's index within its task
    rundir.write_samples(path, records)


def _verdicts(seed: int, n: int, p: float) -> list[list[bool]]:
    rng = random.Random(seed)
    return [[rng.random() < p for _ in range(1 + i % 3)] for i in range(n)]


def ifeval_task(verdicts: list[list[bool]]) -> SynthTask:
    """An IFEval-shaped task: prompt-level scores, per-instruction-type groups stored as the task stores them."""
    groups: dict[str, dict[str, list[float]]] = {}
    for i, vs in enumerate(verdicts):
        for n, ok in enumerate(vs):
            inst = INSTRUCTIONS[(i + n) % len(INSTRUCTIONS)]
            for g in (inst, inst.split(":")[0]):
                groups.setdefault(g, {"inst_level_strict_acc": []})["inst_level_strict_acc"].append(float(ok))
    stored = {g: {m: {**stats.metric(v), "higher_is_better": True} for m, v in ms.items()} for g, ms in groups.items()}
    items = [float(ok) for vs in verdicts for ok in vs]
    overall = {"inst_level_strict_acc": {**stats.metric(items), "higher_is_better": True}}
    return SynthTask({"prompt_level_strict_acc": [float(all(vs)) for vs in verdicts]},
                     extra={"groups": stored, "metrics": overall},
                     targets=[""] * len(verdicts))


def ifeval_answers(verdicts: list[list[bool]]) -> Callable[[SampleRecord, int], None]:
    def fn(r: SampleRecord, i: int) -> None:
        if r.task != "ifeval" or r.score is None:
            return
        ids = [INSTRUCTIONS[(i + n) % len(INSTRUCTIONS)] for n in range(len(verdicts[i]))]
        r.score.answer = {"instruction_id_list": ids, "strict": verdicts[i], "loose": verdicts[i]}
        r.score.explanation = {inst: f"strict {'PASS' if ok else 'FAIL'}: {3 if not ok else 0} commas; "
                               f"loose {'PASS' if ok else 'FAIL'}" for inst, ok in zip(ids, verdicts[i])}
    return fn


def details(r: SampleRecord, i: int) -> None:
    """Every 7th qa sample ran into the token limit; every 5th came from the cache."""
    if r.task == "qa" and r.outputs:
        if i % 7 == 0:
            r.outputs[0].extra["finish_reason"] = "length"
        if i % 5 == 0:
            r.outputs[0].extra["cached"] = True
        if r.score is not None:
            r.score.explanation = {"gold": f"answer {i}", "extracted": str(r.score.answer)}


def comparison_runs(tmp: Path) -> tuple[list[Path], Path]:
    """Three runs (one a trainer run), subtasks, IFEval groups, tricky text; and an arena run."""
    base = binary(N, 0.55, seed=4)
    groups = ["alg</td>ebra", "bio"] * (N // 2)
    judge_cfg = {"judge": {"model": "judge-model", "fingerprint": "fp-judge"}}
    lc = {"metrics": {"lc_win_rate": {"value": 0.52, "stderr": 0.03, "n": N},
                      "lc_length_coef": {"value": 0.001, "stderr": None, "n": N}}}
    ifevals = [_verdicts(7, 60, 0.6), _verdicts(7, 60, 0.6), _verdicts(8, 60, 0.75)]
    ifevals[1][3] = [False] * len(ifevals[1][3])

    def tasks(values: list[float], k: int, word: str) -> dict[str, SynthTask]:
        outs = [f"<script>alert('x')</script> The {word} answer is {i}." for i in range(N)]
        win = flip(base, 5, 5, 9)
        return {"qa": SynthTask({"acc": values, "len": [0.5 + 0.1 * v for v in values]}, groups=groups, outputs=outs,
                                errors=frozenset({11}) if k == 2 else frozenset()),
                "ifeval": ifeval_task(ifevals[k]),
                "winrate": SynthTask({"win": win, "judge_error": [0.0] * N,
                                      "length_diff": [12.0 - 30 * w for w in win]}, config=judge_cfg, extra=lc),
                "mt_bench": SynthTask({"score": [1.0 + 9 * v for v in flip(base, 4, 4, 7)], "judge_error": [0.0] * N},
                                      config=judge_cfg)}

    paths = [write_run(tmp / "base", tasks(base, 0, "plain"), model="base-model"),
             write_run(tmp / "sft", tasks(flip(base, 20, 4, 1), 1, "tuned"), model="sft-lora",
                       extra={"training": training([50, 100, 150, 200])}),
             write_run(tmp / "dpo", tasks(flip(base, 3, 12, 2), 2, "preferred"), model="dpo")]
    for k, p in enumerate(paths):
        patch_samples(p, ifeval_answers(ifevals[k]))
        patch_samples(p, details)
    arena_run = write_run(tmp / "arena", {"arena:mt_bench": SynthTask({"position_inconsistency": [0.0, 1.0] * 10})},
                          model="arena", extra={"arena": arena({"base-model": (1000, 980, 1020),
                                                                "sft-lora": (960, 935, 985), "dpo": (1040, 1015, 1066)})})
    return paths, arena_run


def human_store(tmp: Path, runs: list[Path]) -> Path:
    """A pairwise annotation store over the first two runs' qa answers, judged by two annotators (names with
    markup, which the report must show as text)."""
    from evalsuite.annotate import sources
    from evalsuite.annotate.store import Store

    items, origin = sources.from_runs([str(p) for p in runs[:2]], "pairwise", task="qa", limit=12)
    store = Store.create(tmp / "human.sqlite", {"name": "qa", "mode": "pairwise", "criteria": [], "labels": [],
                                                **origin}, items)
    for n, it in enumerate(store.items()):
        store.submit("ann <b>1</b>", it["id"], {"choice": "AB"[n % 2]})
        store.submit("bob", it["id"], {"choice": ("A", "B", "tie")[n % 3]})
    return store.path


def single_run(tmp: Path) -> Path:
    verdicts = _verdicts(3, 80, 0.7)
    run = write_run(tmp / "one", {"qa": SynthTask({"acc": binary(80, 0.6, seed=2)}, groups=["geo", "bio"] * 40,
                                                  errors=frozenset({4})),
                                  "ifeval": ifeval_task(verdicts)}, model="solo-model")
    patch_samples(run, ifeval_answers(verdicts))
    patch_samples(run, details)
    return run


def trainer_run(tmp: Path) -> Path:
    """A training run as the trainer leaves it: one eval run per checkpoint (step 0 = the base model), a loss
    curve per logged step, and the best checkpoint chosen by value."""
    a = binary(120, 0.4, seed=5)
    scores = {0: a, 20: flip(a, 2, 14, 1), 40: flip(a, 2, 26, 2), 60: flip(a, 6, 22, 3)}
    train = tmp / "train"
    steps = []
    for step, values in scores.items():
        sub = f"evals/step-{step}"
        write_run(train / sub, {"t": SynthTask({"acc": values})}, model=f"t+step-{step}")
        steps.append(runlog.Checkpoint(step=step, scores={"t/acc": sum(values) / len(values)}, eval_runs=[sub],
                                       train_loss=None if step == 0 else 2.0 / (1 + step / 20),
                                       val_loss=1.9 / (1 + step / 25) + 0.004 * step))
    best = max(steps, key=lambda c: c.scores["t/acc"] or 0)
    rng = random.Random(1)
    curve = [{"step": s, "loss": 2.2 / (1 + s / 15) + rng.uniform(-0.12, 0.12), "lr": 2e-4} for s in range(1, 61)]
    tasks = rundir.load_results(train / best.eval_runs[0]).tasks  # the trainer copies the best checkpoint's tasks
    results = runlog.RunResults(kind="training", model=runlog.ModelInfo(name=f"train@step-{best.step}"), tasks=tasks,
                                training=runlog.Training(steps=steps, curve=curve, best=runlog.Best(
                                    step=best.step, metric="t/acc", value=best.scores["t/acc"], eval_runs=best.eval_runs)))
    rundir.RunWriter(train, results).finish("complete")
    return train
