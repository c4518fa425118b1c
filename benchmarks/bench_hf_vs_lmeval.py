"""evalsuite's HF backend vs lm-eval's `hf` model: same model, same requests, same process.

    python benchmarks/bench_hf_vs_lmeval.py --data-dir ../shared/data [--mmlu-questions 50] [--gsm8k 20] [--device cuda]
        [--only mmlu|gsm8k]

MMLU: the first questions of 5 subjects, 5-shot (4 log-likelihood requests each); GSM8K: 5-shot
greedy generations, by evalsuite without and with the shared-prefix reuse (`prefix_reuse`) and by
lm-eval. lm-eval runs the same prompts through local-file YAML tasks (`dataset_path: json`).
Prints requests/s, tokens/s, the speed ratios, the max |Δ log-likelihood| per request, whether the
generations are identical, and evalsuite's wall time over a bare batched torch forward of the same
tokens. Wall times on a shared machine move with its load: the process CPU time is printed beside
them, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _device import add_device_flag, check_device, device_label, synchronize

SUBJECTS = ["abstract_algebra", "anatomy", "astronomy", "college_biology", "high_school_geography"]
MMLU_YAML = """task: bench_mmlu_{subject}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {test}
    dev: {dev}
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {topic}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
"""
GSM8K_YAML = """include: {lm_eval_gsm8k}
task: bench_gsm8k
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    train: {train}
    test: {test}
fewshot_config:
  sampler: first_n
"""


def write_lm_eval_tasks(data_dir: Path, out: Path, n_per_subject: int, n_gsm8k: int) -> None:
    from evalsuite.data import read_csv, read_jsonl

    for subject in SUBJECTS:
        for split, n in (("test", n_per_subject), ("dev", 5)):
            rows = read_csv(data_dir / "mmlu" / split / f"{subject}_{split}.csv")[:n]
            with (out / f"{subject}_{split}.jsonl").open("w") as f:
                for r in rows:
                    f.write(json.dumps({"question": r["question"], "choices": [r[f"choice{i}"] for i in range(4)],
                                        "answer": int(r["answer"])}) + "\n")
        (out / f"mmlu_{subject}.yaml").write_text(MMLU_YAML.format(
            subject=subject, topic=subject.replace("_", " "), test=out / f"{subject}_test.jsonl", dev=out / f"{subject}_dev.jsonl"))
    for split, n in (("train", 5), ("test", n_gsm8k)):
        rows = read_jsonl(data_dir / "gsm8k" / f"{split}.jsonl")[:n]
        (out / f"gsm8k_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import lm_eval

    (out / "gsm8k.yaml").write_text(GSM8K_YAML.format(
        lm_eval_gsm8k=Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k.yaml", train=out / "gsm8k_train.jsonl",
        test=out / "gsm8k_test.jsonl"))


def timed(fn, *args):
    """(wall s, process CPU s, result) of fn(*args)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0, out


def run_lm_eval(model, tok, task_dir: Path, tasks: list[str], batch_size: int) -> tuple[float, dict]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, max_length=2048)
    t0 = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=tasks, num_fewshot=5, log_samples=True,
                          task_manager=TaskManager(include_path=str(task_dir)), random_seed=0, bootstrap_iters=0)
    return time.perf_counter() - t0, out


def run_evalsuite(backend, task: str, data_dir: Path, limit_tasks: dict) -> tuple[float, list]:
    from evalsuite.cache import NullCache
    from evalsuite.progress import make_progress
    from evalsuite.runner import execute_task, serve
    from evalsuite.task import TaskContext
    from evalsuite.tasks.gsm8k import GSM8K
    from evalsuite.tasks.mmlu import MMLU

    ctx = TaskContext(data_dir=data_dir)
    t = MMLU(subjects="+".join(SUBJECTS)) if task == "mmlu" else GSM8K()
    load = t.load
    t.load = lambda c: limit_tasks[task](load(c))  # the same questions lm-eval sees
    t0 = time.perf_counter()
    with make_progress() as progress:
        records, _ = execute_task(task, t, ctx, lambda reqs, label: serve(reqs, backend, NullCache(), "x", progress, label))
    return time.perf_counter() - t0, records


def bare_forward(model, tok, contexts: list[str], batch_size: int) -> float:
    """A plain batched forward (right padding, no sharing) over the same MMLU contexts."""
    import torch

    encoded = sorted((tok(c)["input_ids"] for c in contexts), key=len, reverse=True)
    dev = next(model.parameters()).device
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(encoded), batch_size):
            batch = encoded[i : i + batch_size]
            width = len(batch[0])
            ids = torch.tensor([b + [tok.pad_token_id] * (width - len(b)) for b in batch], device=dev)
            mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in batch], device=dev)
            model(input_ids=ids, attention_mask=mask)
    synchronize(dev.type)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    ap.add_argument("--mmlu-questions", type=int, default=50, help="total, split over 5 subjects (x4 requests)")
    ap.add_argument("--gsm8k", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16, help="lm-eval's batch size")
    ap.add_argument("--only", choices=("mmlu", "gsm8k"), help="run one workload's rows only")
    add_device_flag(ap)
    args = ap.parse_args()
    check_device(args.device)
    per_subject = args.mmlu_questions // len(SUBJECTS)
    load_before = os.getloadavg()

    from evalsuite.backends.hf import HFBackend

    backend = HFBackend("smollm2-135m", dtype="float32", device=args.device)
    model, tok = backend.model, backend.tokenizer
    tmp = Path(tempfile.mkdtemp(prefix="bench-lmeval-"))
    write_lm_eval_tasks(args.data_dir, tmp, per_subject, args.gsm8k)
    pick_mmlu = lambda samples: [s for s in samples if int(s.id.split("/")[1]) < per_subject]  # noqa: E731
    pick_gsm = lambda samples: samples[: args.gsm8k]  # noqa: E731

    print(f"\nmodel SmolLM2-135M {backend.dtype} on {device_label(args.device)}; lm-eval batch_size={args.batch_size}; "
          f"torch threads {backend.threads_note}")
    print("| workload | evalsuite | lm-eval | ratio |\n|---|---|---|---|")
    if args.only != "gsm8k":
        mmlu_rows(args, backend, model, tok, tmp, pick_mmlu)
    if args.only != "mmlu":
        gsm8k_rows(args, backend, model, tok, tmp, pick_gsm)
    print(f"load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, "
          f"after {'/'.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


def mmlu_rows(args, backend, model, tok, tmp: Path, pick_mmlu) -> None:
    es_ll_time, _, (_, es_mmlu) = timed(run_evalsuite, backend, "mmlu", args.data_dir, {"mmlu": pick_mmlu})
    lm_ll_time, lm_out = run_lm_eval(model, tok, tmp, [f"bench_mmlu_{s}" for s in SUBJECTS], args.batch_size)
    bare_time = bare_forward(model, tok, sorted({r.requests[0].context for r in es_mmlu}), args.batch_size)

    # per-request log-likelihood agreement
    ours = {(r.sample.metadata["subject"], int(r.sample.id.split("/")[1])): [o.logprob for o in r.outputs] for r in es_mmlu}
    max_diff, agree, n_q = 0.0, 0, 0
    for subject in SUBJECTS:
        for s in lm_out["samples"][f"bench_mmlu_{subject}"]:
            theirs = [float(resp[0][0]) for resp in s["resps"]]
            mine = ours[(subject, s["doc_id"])]
            max_diff = max(max_diff, *(abs(a - b) for a, b in zip(mine, theirs)))
            agree += max(range(4), key=mine.__getitem__) == max(range(4), key=theirs.__getitem__)
            n_q += 1
    n_ll = 4 * n_q
    ll_tokens = sum(o.tokens_in for r in es_mmlu for o in r.outputs)
    print(f"| MMLU log-likelihood, {n_ll} requests | {es_ll_time:.1f} s ({n_ll / es_ll_time:.1f} req/s, "
          f"{ll_tokens / es_ll_time:.0f} tok/s) | {lm_ll_time:.1f} s ({n_ll / lm_ll_time:.1f} req/s) | "
          f"{lm_ll_time / es_ll_time:.2f}x |")
    print(f"max |Δ loglikelihood| = {max_diff:.2e}; same argmax answer on {agree}/{n_q} questions")
    print(f"harness overhead: evalsuite MMLU wall / bare batched forward of the same contexts = "
          f"{es_ll_time:.1f} s / {bare_time:.1f} s = {es_ll_time / bare_time:.2f}")


def gsm8k_rows(args, backend, model, tok, tmp: Path, pick_gsm) -> None:
    """evalsuite without prefix reuse (as before it existed), with it, and lm-eval: same prompts, one process."""
    runs = {}
    for reuse in (False, True):
        backend.prefix_reuse = reuse
        wall, cpu, (_, records) = timed(run_evalsuite, backend, "gsm8k", args.data_dir, {"gsm8k": pick_gsm})
        runs[reuse] = (wall, cpu, records)
    lm_gen_time, lm_cpu, (_, lm_gen) = timed(run_lm_eval, model, tok, tmp, ["bench_gsm8k"], args.batch_size)
    lm_texts = [s["resps"][0][0] for s in lm_gen["samples"]["bench_gsm8k"]]
    (off_wall, off_cpu, off), (on_wall, on_cpu, on) = runs[False], runs[True]
    n = len(on)
    for name, (wall, cpu, records) in (("prefix_reuse=false", runs[False]), ("prefix reuse (default)", runs[True])):
        new_tokens = sum(r.outputs[0].tokens_out for r in records)
        print(f"| GSM8K generation, {n} prompts, evalsuite {name} | {wall:.1f} s ({new_tokens / wall:.1f} new tok/s; "
              f"CPU {cpu:.1f} s) | {lm_gen_time:.1f} s (CPU {lm_cpu:.1f} s) | {lm_gen_time / wall:.2f}x |")
    print(f"prefix reuse vs reuse off: wall {off_wall / on_wall:.2f}x, process CPU {off_cpu / on_cpu:.2f}x")
    same_reuse = sum(a.outputs[0].text == b.outputs[0].text for a, b in zip(on, off))
    same_lm = sum(a == r.outputs[0].text for a, r in zip(lm_texts, on))
    print(f"identical greedy GSM8K outputs: reuse on vs off {same_reuse}/{n}; evalsuite vs lm-eval {same_lm}/{n}")


if __name__ == "__main__":
    main()
