"""Fidelity: evalsuite's native MMLU / ARC-Easy / HellaSwag vs the same questions run by lm-eval itself.

Both sides use the same SmolLM2-135M weights (one model object: evalsuite's HF backend, and lm-eval's
HFLM wrapping that backend's model and tokenizer). lm-eval runs local-file YAMLs built from its own
task configs (prompts, choices, few-shot settings, HellaSwag's `process_docs`), with only the
dataset swapped for the same shared/data rows evalsuite reads:
- MMLU: lm-eval's `mmlu/default/_default_template_yaml` + the subject description, 5-shot `first_n`
  from the dev split, one task per subject;
- ARC-Easy: lm-eval's `arc_easy.yaml`, rows rebuilt in AI2's form (question, choices{text,label}, answerKey);
- HellaSwag: lm-eval's `hellaswag.yaml` and its `utils.process_docs`, rows rebuilt as {activity_label,
  ctx_a, ctx_b, endings, label} from the text form (ctx_b = the fragment after the last sentence end
  when it starts lower case, the same split the native loader assumes).
Per sample it compares the chosen answer (argmax log-likelihood; and the acc_norm choice), the
accuracy difference, and the largest log-likelihood difference; every disagreement is printed with
the two models' top-two margins (a disagreement with a near-zero margin is a numerical tie).

    python benchmarks/bench_fidelity_lmeval.py --n 200 [--data-dir ../shared/data] [--tasks mmlu,arc_easy,hellaswag] [--device cuda]
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
from _device import add_device_flag, check_device, device_label
from evalsuite.tasks.hellaswag import _LAST_FRAGMENT, FILE

LM_EVAL_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"


def lm_eval_yaml(path: Path) -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # !function tags: set again below
    return yaml.load(path.read_text(), Loader=Loader)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def local_config(base: dict[str, Any], task: str, data_files: dict[str, str], **over: Any) -> dict[str, Any]:
    cfg = {k: v for k, v in base.items() if k not in ("tag", "include", "dataset_name", "process_docs")}
    cfg.update({"task": task, "dataset_path": "json", "dataset_kwargs": {"data_files": data_files},
                "training_split": None, "validation_split": None, "test_split": None, **over})
    return cfg


# ---------------------------------------------------------------------------- lm-eval task folders
def mmlu_tasks(samples: list[Any], data_dir: Path, out: Path) -> dict[str, list[tuple[str, int]]]:
    """One YAML per subject; returns lm-eval task -> [(native sample id, doc_id)]."""
    import csv

    template = lm_eval_yaml(LM_EVAL_TASKS / "mmlu/default/_default_template_yaml")
    by_subject: dict[str, list[Any]] = {}
    for s in samples:
        by_subject.setdefault(s.metadata["subject"], []).append(s)
    mapping = {}
    for subject, subs in by_subject.items():
        def rows(split: str, subject: str = subject) -> list[dict[str, Any]]:
            with (data_dir / "mmlu" / split / f"{subject}_{split}.csv").open(encoding="utf-8", newline="") as f:
                return [{"question": r["question"], "choices": [r[f"choice{i}"] for i in range(4)],
                         "answer": int(r["answer"])} for r in csv.DictReader(f)]

        test = rows("test")
        wanted = [test[int(s.id.split("/")[1])] for s in subs]
        files = {"test": write_jsonl(out / f"mmlu_{subject}_test.jsonl", wanted),
                 "dev": write_jsonl(out / f"mmlu_{subject}_dev.jsonl", rows("dev"))}
        name = f"local_mmlu_{subject}"
        topic = subject.replace("_", " ")
        cfg = local_config(template, name, files, test_split="test", fewshot_split="dev", num_fewshot=5,
                           description=f"The following are multiple choice questions (with answers) about {topic}.\n\n")
        (out / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        mapping[name] = [(s.id, i) for i, s in enumerate(subs)]
    return mapping


def arc_tasks(samples: list[Any], out: Path) -> dict[str, list[tuple[str, int]]]:
    rows = [{"id": s.id, "question": s.input.removeprefix("Question: ").removesuffix("\nAnswer:"),
             "choices": {"text": s.choices, "label": list("ABCDE"[: len(s.choices)])},
             "answerKey": "ABCDE"[s.target]} for s in samples]
    base = lm_eval_yaml(LM_EVAL_TASKS / "arc/arc_easy.yaml")
    cfg = local_config(base, "local_arc_easy", {"test": write_jsonl(out / "arc_easy.jsonl", rows)}, test_split="test")
    (out / "local_arc_easy.yaml").write_text(yaml.safe_dump(cfg))
    return {"local_arc_easy": [(s.id, i) for i, s in enumerate(samples)]}


def hellaswag_tasks(samples: list[Any], data_dir: Path, out: Path) -> dict[str, list[tuple[str, int]]]:
    """Rows in Rowan/hellaswag's shape, rebuilt from the raw text form (not from evalsuite's prompts)."""
    import bz2

    with bz2.open(data_dir / "hellaswag" / FILE, "rt", encoding="utf-8") as f:
        lines = f.readlines()
    rows = []
    for s in samples:
        head, label, *endings = (x.rstrip("\n") for x in lines[int(s.id) * 6: int(s.id) * 6 + 6])
        activity, ctx = head.split(": ", 1)
        m = _LAST_FRAGMENT.match(ctx)
        ctx_a, ctx_b = (ctx[: len(m.group(1)) - 1], ctx[len(m.group(1)):]) if m else (ctx, "")
        rows.append({"activity_label": activity, "ctx_a": ctx_a, "ctx_b": ctx_b, "endings": endings, "label": label})
    base = lm_eval_yaml(LM_EVAL_TASKS / "hellaswag/hellaswag.yaml")
    cfg = local_config(base, "local_hellaswag", {"validation": write_jsonl(out / "hellaswag.jsonl", rows)},
                       validation_split="validation")
    (out / "utils.py").write_text("from lm_eval.tasks.hellaswag.utils import process_docs  # noqa: F401\n")
    (out / "local_hellaswag.yaml").write_text(yaml.safe_dump(cfg) + "process_docs: !function utils.process_docs\n")
    return {"local_hellaswag": [(s.id, i) for i, s in enumerate(samples)]}


# ---------------------------------------------------------------------------- comparison
def argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def margin(xs: list[float]) -> float:
    top = sorted(xs, reverse=True)
    return top[0] - top[1]


def compare(name: str, records: dict[str, Any], lm_samples: dict[str, list[dict]], mapping: dict[str, list[tuple[str, int]]]) -> dict:
    rows = []
    for lm_task, pairs in mapping.items():
        by_doc = {s["doc_id"]: s for s in lm_samples[lm_task]}
        for sid, doc_id in pairs:
            rec, theirs = records[sid], by_doc[doc_id]
            ours_ll = [o.logprob for o in rec.outputs]
            their_ll = [r[0][0] for r in theirs["resps"]]
            rows.append({"id": sid, "ours": ours_ll, "theirs": their_ll, "gold": rec.sample.target, "choices": rec.sample.choices,
                         "lm_acc": theirs.get("acc"), "lm_acc_norm": theirs.get("acc_norm"), "scores": rec.score.values,
                         "same_prompt": theirs["arguments"][0][0] == rec.requests[0].context,
                         "same_cont": [a[1] for a in theirs["arguments"]] == [r.continuation for r in rec.requests]})
    n = len(rows)
    agree = sum(argmax(r["ours"]) == argmax(r["theirs"]) for r in rows)
    out = {"task": name, "n": n, "agree": agree, "prompt_identical": sum(r["same_prompt"] and r["same_cont"] for r in rows),
           "acc_ours": sum(r["scores"]["acc"] for r in rows) / n, "acc_lm_eval": sum(r["lm_acc"] for r in rows) / n,
           "max_abs_ll_diff": max(abs(a - b) for r in rows for a, b in zip(r["ours"], r["theirs"])),
           # a choice can only flip when the top-two margin is below ~2x the log-likelihood difference
           "min_margin": min(min(margin(r["ours"]), margin(r["theirs"])) for r in rows)}
    if rows[0]["lm_acc_norm"] is not None:
        lens = lambda r: [len(c) for c in r["choices"]]
        out["agree_norm"] = sum(argmax([a / l for a, l in zip(r["ours"], lens(r))]) == argmax([a / l for a, l in zip(r["theirs"], lens(r))]) for r in rows)
        out["acc_norm_ours"] = sum(r["scores"]["acc_norm"] for r in rows) / n
        out["acc_norm_lm_eval"] = sum(r["lm_acc_norm"] for r in rows) / n
    out["disagreements"] = [{"id": r["id"], "ours": argmax(r["ours"]), "theirs": argmax(r["theirs"]),
                             "margin_ours": round(margin(r["ours"]), 5), "margin_theirs": round(margin(r["theirs"]), 5),
                             "same_prompt": r["same_prompt"]} for r in rows if argmax(r["ours"]) != argmax(r["theirs"])]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--tasks", default="mmlu,arc_easy,hellaswag")
    ap.add_argument("--data-dir", default=os.environ.get("EVALSUITE_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=4,
                    help="lm-eval HFLM batch size (16 ran out of 24 GiB on MMLU: full-vocab logits of ~3k-token prompts)")
    ap.add_argument("--json", help="write the full comparison here")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads, the same for both sides")
    add_device_flag(ap)
    args = ap.parse_args()
    check_device(args.device)

    import torch

    torch.set_num_threads(args.threads)

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from evalsuite.rundir import load_run
    from evalsuite.runner import RunConfig, make_backend, run_eval

    data_dir, names = Path(args.data_dir).resolve(), args.tasks.split(",")
    t0 = time.perf_counter()
    backend = make_backend(args.model, None, {"device": args.device})
    print(f"model loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="fidelity-"))
    t0, c0 = time.perf_counter(), time.process_time()
    run = load_run(run_eval(RunConfig(tasks=names, model=args.model, limit=args.n, data_dir=str(data_dir),
                                      use_cache=False, output_dir=str(work / "runs")), backend=backend))
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    records = {name: {r.sample.id: r for r in run.records_for(name)} for name in names}
    include = work / "lm_eval_tasks"
    include.mkdir()
    mappings = {}
    for name in names:
        samples = [r.sample for r in run.records_for(name)]
        if name == "mmlu":
            mappings[name] = mmlu_tasks(samples, data_dir, include)
        elif name == "arc_easy":
            mappings[name] = arc_tasks(samples, include)
        else:
            mappings[name] = hellaswag_tasks(samples, data_dir, include)
    hflm = HFLM(pretrained=backend.model, tokenizer=backend.tokenizer, batch_size=args.batch_size, device=backend.device)
    t0, c0 = time.perf_counter(), time.process_time()
    res = lm_eval.simple_evaluate(model=hflm, tasks=[t for m in mappings.values() for t in m], log_samples=True,
                                  task_manager=TaskManager(include_path=str(include), include_defaults=False))
    t_lm, c_lm = time.perf_counter() - t0, time.process_time() - c0
    report = [compare(name, records[name], res["samples"], mappings[name]) for name in names]
    print(f"\nmodel {backend.model_name} on {device_label(args.device)}; n={args.n} per task"
          + ("; shared CPU (timings are noisy)" if args.device == "cpu" else ""))
    print(f"wall: evalsuite {t_ours:.1f} s, lm-eval {t_lm:.1f} s (ratio lm-eval/evalsuite {t_lm / t_ours:.2f})")
    print(f"CPU (process time, {args.threads} torch thread(s)): evalsuite {c_ours:.1f} s, lm-eval {c_lm:.1f} s "
          f"(ratio {c_lm / c_ours:.2f})")
    print(f"{'task':10} {'n':>4} {'prompt=':>7} {'agree':>7} {'acc ours':>9} {'acc lm':>7} {'Δacc':>7} "
          f"{'agree_n':>7} {'accn ours':>9} {'accn lm':>8} {'max|Δll|':>9}")
    for r in report:
        norm = (f"{r['agree_norm'] / r['n']:7.1%} {r['acc_norm_ours']:9.3f} {r['acc_norm_lm_eval']:8.3f}"
                if "agree_norm" in r else f"{'-':>7} {'-':>9} {'-':>8}")
        print(f"{r['task']:10} {r['n']:4d} {r['prompt_identical']:7d} {r['agree'] / r['n']:7.1%} {r['acc_ours']:9.3f} "
              f"{r['acc_lm_eval']:7.3f} {r['acc_ours'] - r['acc_lm_eval']:+7.3f} {norm} {r['max_abs_ll_diff']:9.2e}"
              f"  (smallest top-two margin {r['min_margin']:.2e})")
        for d in r["disagreements"]:
            print(f"   disagreement {r['task']} {d['id']}: ours {d['ours']} (margin {d['margin_ours']}) "
                  f"vs lm-eval {d['theirs']} (margin {d['margin_theirs']}), same prompt: {d['same_prompt']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"timing": {"evalsuite_s": t_ours, "lm_eval_s": t_lm, "evalsuite_cpu_s": c_ours,
                                                    "lm_eval_cpu_s": c_lm, "threads": args.threads}, "tasks": report}, indent=2))


if __name__ == "__main__":
    main()
