"""lm-eval in both directions: lm-eval tasks run by evalsuite, evalsuite backends run by lm-eval.

The tasks are local-file YAMLs (`dataset_path: json`), which lm-eval loads offline. The central
check: the same task, answered by the same model through the same cache, scores identically
whether evalsuite runs it (`lm_eval:NAME`) or lm-eval runs it (`--model evalsuite`), and
evalsuite's HF backend gives lm-eval's HFLM log-likelihoods.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from evalsuite.tasks.lm_eval_bridge import hub_reachable, lm_eval_task

from evalsuite.errors import DataError, UsageError
from evalsuite.task import TaskContext

TASKS = ("es_mc", "es_gen", "es_roll")

MC_YAML = """task: es_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/mc.jsonl
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{gold}}}}"
doc_to_choice: "{{{{choices}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
  - metric: acc_bytes
metadata:
  version: 1.0
"""
GEN_YAML = """task: es_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/gen.jsonl
output_type: generate_until
test_split: test
doc_to_text: "Q: {{{{q}}}}\\nA:"
doc_to_target: "{{{{a}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
filter_list:
  - name: digits
    filter:
      - function: regex
        regex_pattern: "(\\\\d+)"
      - function: take_first
  - name: none
    filter:
      - function: take_first
metadata:
  version: 2.0
"""
ROLL_YAML = """task: es_roll
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/roll.jsonl
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def include_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    rows = {
        "mc": [{"question": f"What is {i} plus {i}?", "choices": [str(2 * i), str(2 * i + 1), "a fish", "un blé doré"],
                "gold": i % 4} for i in range(6)],
        "gen": [{"q": f"{i} + 1 =", "a": str(i + 1)} for i in range(4)],
        "roll": [{"text": "The cat sat on the mat. It was a sunny day."}, {"text": "Numbers: 1, 2, 3, 4 and five."}],
    }
    for name, items in rows.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    for name, text in (("mc", MC_YAML), ("gen", GEN_YAML), ("roll", ROLL_YAML)):
        (root / f"es_{name}.yaml").write_text(text.format(data=root))
    (root / "es_group.yaml").write_text("group: es_group\ntask:\n  - es_mc\n  - es_roll\n")
    return root


def test_unknown_task_or_folder_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown lm-eval task 'no_such_task'.*pass --include-path DIR"):
        lm_eval_task("no_such_task").load(TaskContext())
    with pytest.raises(UsageError, match="is not a folder of lm-eval YAML tasks"):
        lm_eval_task("x", include_path=str(tmp_path / "nope")).load(TaskContext())


@pytest.mark.skipif(hub_reachable(), reason="the hub is reachable: built-in tasks would load")
def test_builtin_task_offline_fails_fast_with_the_fix() -> None:
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="hub is unreachable.*dataset_path: json.*--include-path") as err:
        lm_eval_task("arc_easy").load(TaskContext())
    assert "\n" not in str(err.value) and time.perf_counter() - t0 < 25  # no 30 s of hub retries


def test_instances_become_evalsuite_requests(include_dir: Path) -> None:
    ctx = TaskContext(limit=2, options={"include_path": str(include_dir)})
    mc, gen, roll = (lm_eval_task(n) for n in TASKS)
    (s0, s1) = mc.load(ctx)
    assert s0.input == "Question: What is 0 plus 0?\nAnswer:" and s1.target == 1
    assert [(r.context, r.continuation) for r in mc.requests(s0)][:2] == [(s0.input, " 0"), (s0.input, " 1")]
    (req,) = gen.requests(gen.load(ctx)[0])
    assert (req.prompt, req.stop, req.max_tokens, req.temperature) == ("Q: 0 + 1 =\nA:", ("\n",), 6, 0.0)
    (req,) = roll.requests(roll.load(ctx)[0])
    assert (req.context, req.continuation) == ("", "The cat sat on the mat. It was a sunny day.")


def test_group_scores_with_lm_evals_functions(include_dir: Path) -> None:
    """A group runs every leaf; lm-eval's process_results/aggregation score given outputs (no model)."""
    from evalsuite.records import Output, SampleRecord

    task = lm_eval_task("es_group")
    ctx = TaskContext(options={"include_path": str(include_dir)})
    samples = task.load(ctx)
    assert sorted(s.id for s in samples)[:2] == ["es_mc/0", "es_mc/1"] and len(samples) == 8
    records = []
    for s in samples:
        reqs = task.requests(s)
        # mc: the gold choice gets the highest log-likelihood on even docs; rolling: -2 nats per char
        outs = [Output(logprob=-2.0 * len(r.continuation)) if r.context == "" else
                Output(logprob=-1.0 if (i == s.target) == (s.metadata["doc_id"] % 2 == 0) else -5.0, is_greedy=False)
                for i, r in enumerate(reqs)]
        records.append(SampleRecord("lm_eval:es_group", s, reqs, outs))
    for r, score in zip(records, task.score_all(records, ctx)):
        r.score = score
    out = task.aggregate(records)
    assert out["groups"]["es_mc"]["acc"]["value"] == 0.5 and out["groups"]["es_mc"]["acc"]["n"] == 6
    bpb = out["groups"]["es_roll"]["bits_per_byte"]["value"]
    assert math.isclose(bpb, 2.0 / math.log(2), rel_tol=1e-9)  # lm-eval's bits_per_byte of 2 nats per (ASCII) byte
    assert out["metrics"]["acc"]["value"] == 0.5 and out["lm_eval"]["task"] == "es_group"
    assert isinstance(records[-1].score.answer["items"]["bits_per_byte"], list)  # (loglikelihood, bytes) items


def test_native_choice_metrics_equal_lm_evals_process_results(include_dir: Path) -> None:
    """evalsuite's ARC/HellaSwag metrics (choice_metrics) vs lm-eval's multiple_choice process_results."""
    import random

    from evalsuite.tasks.multiple_choice import choice_metrics

    from evalsuite.records import Output, SampleRecord

    task, ctx, rng = lm_eval_task("es_mc"), TaskContext(options={"include_path": str(include_dir)}), random.Random(0)
    samples = task.load(ctx)
    for _ in range(40):
        records = [SampleRecord("lm_eval:es_mc", s, task.requests(s),
                                [Output(logprob=-rng.uniform(0.5, 20.0), is_greedy=False) for _ in s.choices])
                   for s in samples]
        for r, score in zip(records, task.score_all(records, ctx)):
            texts = [c.removeprefix(" ") for c in r.sample.choices]  # the bridge keeps lm-eval's continuations
            ours, _ = choice_metrics([o.logprob for o in r.outputs], texts, int(r.sample.target))
            assert score.values == ours, (r.sample.choices, [o.logprob for o in r.outputs])


@pytest.mark.slow
def test_bridge_scores_equal_lm_evals_and_backends_agree(include_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    import evalsuite.lm_eval_model  # noqa: F401 - registers "evalsuite"
    from evalsuite.rundir import load_run
    from evalsuite.runner import RunConfig, run_eval

    cache = str(tmp_path / "calls.sqlite")
    run = load_run(run_eval(RunConfig(tasks=[f"lm_eval:{t}" for t in TASKS], model=str(tiny_model_dir),
                                      options={"include_path": str(include_dir)}, cache_path=cache,
                                      output_dir=str(tmp_path / "runs"))))
    # lm-eval itself, on evalsuite's backend through the same cache: every answer is a cache hit
    theirs = lm_eval.simple_evaluate(model="evalsuite", model_args=f"model={tiny_model_dir},cache_path={cache}",
                                     tasks=list(TASKS), task_manager=TaskManager(include_path=str(include_dir), include_defaults=False))
    for t in TASKS:
        ours = run.tasks[f"lm_eval:{t}"].metrics
        keys = [k for k in theirs["results"][t] if "," in k and "_stderr" not in k]
        assert len(keys) == len(ours) >= 2, (keys, ours)
        for key in keys:
            metric, _, filt = key.partition(",")
            mine = ours[metric if filt == "none" else key]
            assert math.isclose(mine.value, theirs["results"][t][key], rel_tol=1e-9), (t, key)
            se = theirs["results"][t][f"{metric}_stderr,{filt}"]
            if isinstance(se, float):
                assert math.isclose(mine.stderr, se, rel_tol=1e-6), (t, key)
    gen_records = run.records_for("lm_eval:es_gen")
    assert all("digits" in r.score.answer["filtered"] for r in gen_records)
    # evalsuite's HF backend vs lm-eval's HFLM on the same weights: the same log-likelihoods
    hflm = lm_eval.simple_evaluate(model=HFLM(pretrained=str(tiny_model_dir), batch_size=4, device="cpu"), tasks=["es_mc", "es_roll"],
                                   task_manager=TaskManager(include_path=str(include_dir), include_defaults=False), log_samples=True)
    for t in ("es_mc", "es_roll"):
        records = {int(r.sample.metadata["doc_id"]): r for r in run.records_for(f"lm_eval:{t}")}
        for s in hflm["samples"][t]:
            lls = [resp[0][0] if isinstance(resp[0], (list, tuple)) else resp[0] for resp in s["resps"]]
            mine = [o.logprob for o in records[s["doc_id"]].outputs]
            assert all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4) for a, b in zip(mine, lls)), (t, mine, lls)


@pytest.mark.slow
def test_real_lm_eval_cli_with_the_evalsuite_model(include_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The installed `lm_eval` script itself runs `--model evalsuite` once the startup hook is in site-packages.

    The hook goes into a throw-away venv that sees exactly this interpreter's packages (the real
    site-packages stays untouched); it is installed through `python -m evalsuite.lm_eval_model --install-hook DIR`.
    The venv reaches them through a .pth file that adds this interpreter's site dirs (their .pth files
    included): `--system-site-packages` would give the base interpreter's packages, not those of
    the venv most users install evalsuite into, and the test would fail (or test another copy) there.
    """
    import site
    from importlib.metadata import distribution

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_dir = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
    ours = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    (Path(site_dir) / "_outer_env.pth").write_text("".join(f"import site; site.addsitedir({d!r})\n" for d in ours))
    where = "import evalsuite, lm_eval; print(evalsuite.__file__, lm_eval.__file__)"
    seen = subprocess.run([python, "-c", where], check=True, capture_output=True, text=True).stdout.split()
    import evalsuite
    import lm_eval

    assert seen == [evalsuite.__file__, lm_eval.__file__]  # the same copies this test imported, not others
    subprocess.run([python, "-m", "evalsuite.lm_eval_model", "--install-hook", site_dir], check=True, capture_output=True)
    assert (Path(site_dir) / "evalsuite_lm_eval.pth").is_file()
    probe = "import sys; print('evalsuite' in sys.modules, any(getattr(f, '__name__', '') == 'Finder' for f in sys.meta_path))"
    inert = subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True).stdout.split()
    assert inert == ["False", "False"]  # any other program: nothing imported, no finder installed
    dist = distribution("lm_eval")  # the console script pip installed with it, wherever its scripts dir is
    lm_eval_script = next(Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name == "lm_eval" and f.parent.name == "bin")
    env = {**os.environ, "EVALSUITE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([python, str(lm_eval_script), "--model", "evalsuite",
                           "--model_args", f"model={tiny_model_dir}", "--tasks", "es_mc",
                           "--include_path", str(include_dir), "--output_path", str(tmp_path / "out")],
                          check=False, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(path.read_text())
    assert results["config"]["model"] == "evalsuite" and 0.0 <= results["results"]["es_mc"]["acc,none"] <= 1.0
    assert results["config"]["evalsuite_fingerprint"]
    subprocess.run([python, "-m", "evalsuite.lm_eval_model", "--uninstall-hook", site_dir], check=True, capture_output=True)
    assert not (Path(site_dir) / "evalsuite_lm_eval.pth").exists()
