"""Fidelity: evalsuite's truthfulqa_mc1 / truthfulqa_mc2 vs lm-eval 0.4.13's own tasks, question by question.

Both sides use the same SmolLM2-135M weights (one model object: evalsuite's HF backend, and lm-eval's
HFLM wrapping that backend's model and tokenizer). lm-eval runs its own `truthfulqa_mc1.yaml` /
`truthfulqa_mc2.yaml` (prompt, choices, `process_results_mc2`) from a local-file YAML whose only change
is the dataset: the same `mc_task.json` rows evalsuite reads, rebuilt in the hub's shape
(`mc1_targets: {choices, labels}`). Per question it compares the prompt and continuations, MC1's
chosen answer, MC2's value (max |Δ|) and every log-likelihood (max |Δll|).

    python benchmarks/bench_truthfulqa_lmeval.py --n 100 [--data-dir ../shared/data] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

LM_EVAL_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks" / "truthfulqa"


def lm_eval_yaml(path: Path) -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # !function tags: set again below
    return yaml.load(path.read_text(), Loader=Loader)


def write_tasks(rows: list[dict[str, Any]], out: Path) -> None:
    """local_truthfulqa_mc1 / _mc2: lm-eval's configs with the dataset swapped for the local rows."""
    hub_rows = [{"question": r["question"],
                 **{k: {"choices": list(r[k]), "labels": list(r[k].values())} for k in ("mc1_targets", "mc2_targets")}}
                for r in rows]
    data = out / "truthfulqa_mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in hub_rows))
    mc1 = lm_eval_yaml(LM_EVAL_TASKS / "truthfulqa_mc1.yaml")
    mc2 = {**mc1, **{k: v for k, v in lm_eval_yaml(LM_EVAL_TASKS / "truthfulqa_mc2.yaml").items() if k != "include"}}
    for name, base in (("mc1", mc1), ("mc2", mc2)):
        cfg = {k: v for k, v in base.items() if k not in ("tag", "include", "dataset_name", "process_results")}
        cfg.update({"task": f"local_truthfulqa_{name}", "dataset_path": "json",
                    "dataset_kwargs": {"data_files": {"test": str(data)}}, "validation_split": None, "test_split": "test"})
        text = yaml.safe_dump(cfg)
        if name == "mc2":
            text += "process_results: !function utils.process_results_mc2\n"
        (out / f"local_truthfulqa_{name}.yaml").write_text(text)
    (out / "utils.py").write_text("from lm_eval.tasks.truthfulqa.utils import process_results_mc2  # noqa: F401\n")


def compare(task: str, records: list[Any], lm_samples: list[dict[str, Any]]) -> dict[str, Any]:
    by_doc = {s["doc_id"]: s for s in lm_samples}
    rows = []
    for i, rec in enumerate(records):
        theirs = by_doc[i]
        ours_ll = [o.logprob for o in rec.outputs]
        their_ll = [r[0][0] for r in theirs["resps"]]
        same = (theirs["arguments"][0][0] == rec.requests[0].context
                and [a[1] for a in theirs["arguments"]] == [r.continuation for r in rec.requests])
        rows.append({"id": rec.sample.id, "ours": rec.score.values["acc"], "theirs": float(theirs["acc"]),
                     "max_ll": max(abs(a - b) for a, b in zip(ours_ll, their_ll)), "same_prompt": same})
    n = len(rows)
    return {"task": task, "n": n, "prompt_identical": sum(r["same_prompt"] for r in rows),
            "agree": sum(r["ours"] == r["theirs"] for r in rows) if task.endswith("mc1") else None,
            "max_abs_diff": max(abs(r["ours"] - r["theirs"]) for r in rows),
            "acc_ours": sum(r["ours"] for r in rows) / n, "acc_lm_eval": sum(r["theirs"] for r in rows) / n,
            "max_abs_ll_diff": max(r["max_ll"] for r in rows),
            "disagreements": [r for r in rows if task.endswith("mc1") and r["ours"] != r["theirs"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--data-dir", default=os.environ.get("EVALSUITE_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads, the same for both sides")
    ap.add_argument("--json", help="write the full comparison here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from evalsuite.rundir import load_run
    from evalsuite.runner import RunConfig, make_backend, run_eval

    data_dir = Path(args.data_dir).resolve()
    names = ["truthfulqa_mc1", "truthfulqa_mc2"]
    backend = make_backend(args.model, None, {})
    work = Path(tempfile.mkdtemp(prefix="truthfulqa-fidelity-"))
    t0 = time.perf_counter()
    run = load_run(run_eval(RunConfig(tasks=names, model=args.model, limit=args.n, data_dir=str(data_dir), use_cache=False,
                                      output_dir=str(work / "runs")), backend=backend))
    t_ours = time.perf_counter() - t0
    include = work / "lm_eval_tasks"
    include.mkdir()
    rows = json.loads((data_dir / "truthfulqa" / "mc_task.json").read_text(encoding="utf-8"))[: args.n]
    write_tasks(rows, include)
    hflm = HFLM(pretrained=backend.model, tokenizer=backend.tokenizer, batch_size=args.batch_size, device=backend.device)
    t0 = time.perf_counter()
    res = lm_eval.simple_evaluate(model=hflm, tasks=[f"local_{n}" for n in names], log_samples=True,
                                  task_manager=TaskManager(include_path=str(include), include_defaults=False))
    t_lm = time.perf_counter() - t0
    report = [compare(n, run.records_for(n), res["samples"][f"local_{n}"]) for n in names]
    print(f"\nmodel {backend.model_name} on {backend.device}; first {args.n} questions of mc_task.json; "
          f"wall evalsuite {t_ours:.0f} s, lm-eval {t_lm:.0f} s (shared CPU: noisy)")
    print("| task | n | identical prompts | MC1 same answer | acc evalsuite | acc lm-eval | max abs diff per question | max abs diff log-lik |")
    print("|---|---|---|---|---|---|---|---|")
    for r in report:
        agree = f"{r['agree']}/{r['n']}" if r["agree"] is not None else "-"
        print(f"| {r['task']} | {r['n']} | {r['prompt_identical']} | {agree} | {r['acc_ours']:.4f} | {r['acc_lm_eval']:.4f} | "
              f"{r['max_abs_diff']:.2e} | {r['max_abs_ll_diff']:.2e} |")
        for d in r["disagreements"]:
            print(f"   MC1 disagreement on question {d['id']}: evalsuite {d['ours']} lm-eval {d['theirs']} (max |Δll| {d['max_ll']:.2e})")
    if args.json:
        Path(args.json).write_text(json.dumps({"timing": {"evalsuite_s": t_ours, "lm_eval_s": t_lm}, "tasks": report}, indent=2))


if __name__ == "__main__":
    main()
