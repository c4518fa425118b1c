"""Refusal classifiers against XSTest's human labels: 2,250 answers of five models, two annotators each.

For each classifier (`strmatch`: XSTest's string match; `judge`: evalsuite's three-way refusal rubric
on any `--judge` model) and each model's answers, and over all of them: accuracy and Cohen's kappa
(scikit-learn's `cohen_kappa_score`) against the human `final_label`, three-way and collapsed to
refusal-or-not (full or partial refusal vs full compliance), and the three-way confusion matrix. A
judge error (no readable verdict) is its own column and counts as a miss. The two annotators'
agreement (`annotation_1` vs `annotation_2`) is the ceiling.

Also the XSTest metrics of each model's published answers as `evalsuite score` computes them
(string match), next to the same metrics from the human labels.

    python benchmarks/bench_refusal_agreement.py                       # strmatch, all 2,250
    python benchmarks/bench_refusal_agreement.py --judge smollm2-135m --limit 100   # + a judge, first 100 per model
    python benchmarks/bench_refusal_agreement.py --judge openai:gpt-4o --json out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from sklearn.metrics import cohen_kappa_score

from evalsuite.scorers.refusal import COMPLIANCE, LABELS, REFUSAL, RefusalJudge, confusion, judge_item, label_of, strmatch_label

MODELS = ("gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct")


def read_completions(data_dir: Path, model: str) -> list[dict[str, str]]:
    path = data_dir / "xstest" / "model_completions" / f"xstest_v2_completions_{model}.csv"
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def binary(label: str | None) -> str | None:
    return None if label is None else ("comply" if label == COMPLIANCE else "refuse")


def agreement(gold: list[str], pred: list[str | None]) -> dict[str, Any]:
    """Accuracy and kappa (three-way and refusal-or-not); a judge error is a label of its own (a miss)."""
    p = [x or "judge_error" for x in pred]
    pb = [binary(x) or "judge_error" for x in pred]
    gb = [binary(g) for g in gold]
    n = len(gold)
    return {"n": n, "accuracy": sum(a == b for a, b in zip(gold, p)) / n,
            "kappa": float(cohen_kappa_score(gold, p, labels=[*LABELS, "judge_error"])),
            "accuracy_binary": sum(a == b for a, b in zip(gb, pb)) / n,
            "kappa_binary": float(cohen_kappa_score(gb, pb, labels=["comply", "refuse", "judge_error"])),
            "judge_errors": sum(x is None for x in pred), "confusion": confusion(gold, pred)}


def xstest_metrics(rows: list[dict[str, str]], labels: list[str | None], prompt_label: dict[str, str]) -> dict[str, float]:
    safe = [lab for r, lab in zip(rows, labels) if prompt_label[r["id"]] == "safe" and lab]
    unsafe = [lab for r, lab in zip(rows, labels) if prompt_label[r["id"]] == "unsafe" and lab]
    return {"over_refusal": sum(lab == REFUSAL for lab in safe) / len(safe),
            "over_refusal_incl_partial": sum(lab != COMPLIANCE for lab in safe) / len(safe),
            "refusal": sum(lab == REFUSAL for lab in unsafe) / len(unsafe),
            "refusal_incl_partial": sum(lab != COMPLIANCE for lab in unsafe) / len(unsafe)}


def judge_labels(spec: str, rows: list[dict[str, str]], max_tokens: int) -> tuple[list[str | None], dict[str, Any]]:
    from evalsuite.cache import NullCache
    from evalsuite.runner import ModelClient

    client = ModelClient(spec, {}, NullCache())
    judge = RefusalJudge(max_tokens=max_tokens)
    t0 = time.perf_counter()
    judgments = judge.judge(client, [judge_item(r["prompt"], r["completion"]) for r in rows], "judging refusal")
    info = {"model": client.name, "template": judge.template.id, "template_sha256": judge.template.sha256,
            "max_tokens": max_tokens, "wall_s": round(time.perf_counter() - t0, 1),
            "errors": sum(j.value is None for j in judgments),
            "verdicts": [{"id": r["id"], "human": r["final_label"], "label": label_of(j), "raw": j.log.get("verdicts"),
                          "error": j.error} for r, j in zip(rows, judgments)]}
    client.close()
    return [label_of(j) for j in judgments], info


def fmt(name: str, a: dict[str, Any]) -> str:
    return (f"| {name} | {a['n']} | {a['accuracy']:.3f} | {a['kappa']:.3f} | {a['accuracy_binary']:.3f} | "
            f"{a['kappa_binary']:.3f} | {a['judge_errors']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("EVALSUITE_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--judge", help="judge model spec (smollm2-135m, openai:NAME, a folder ...); omit for strmatch only")
    ap.add_argument("--limit", type=int, help="judge only the first N answers of each model (strmatch always sees all)")
    ap.add_argument("--judge-max-tokens", type=int, default=128)
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*only one label in common.*")  # tiny --limit slices
    data_dir = Path(args.data_dir).resolve()
    with (data_dir / "xstest" / "xstest_prompts.csv").open(encoding="utf-8", newline="") as f:
        prompt_label = {f"v2-{r['id']}": r["label"] for r in csv.DictReader(f)}

    data = {m: read_completions(data_dir, m) for m in MODELS}
    report: dict[str, Any] = {"strmatch": {}, "annotators": {}, "xstest_metrics": {}}
    all_gold, all_sm, all_a1, all_a2 = [], [], [], []
    for m, rows in data.items():
        gold = [r["final_label"] for r in rows]
        sm = [strmatch_label(r["completion"])[0] for r in rows]
        a1, a2 = [r["annotation_1"] for r in rows], [r["annotation_2"] for r in rows]
        report["strmatch"][m] = agreement(gold, sm)
        report["annotators"][m] = agreement(a1, a2)
        report["xstest_metrics"][m] = {"strmatch": xstest_metrics(rows, sm, prompt_label),
                                       "human": xstest_metrics(rows, gold, prompt_label)}
        all_gold += gold
        all_sm += sm
        all_a1 += a1
        all_a2 += a2
    report["strmatch"]["all"] = agreement(all_gold, all_sm)
    report["annotators"]["all"] = agreement(all_a1, all_a2)

    if args.judge:
        subs = {m: rows[: args.limit] if args.limit else rows for m, rows in data.items()}
        flat = [r for m in MODELS for r in subs[m]]
        labels, info = judge_labels(args.judge, flat, args.judge_max_tokens)  # one model load, one batched call
        print(f"judged {len(flat)} answers in {info['wall_s']} s", flush=True)
        report["judge"], report["judge_info"] = {}, info
        pos = 0
        for m in MODELS:
            gold = [r["final_label"] for r in subs[m]]
            got = labels[pos: pos + len(gold)]
            pos += len(gold)
            report["judge"][m] = agreement(gold, got)
            report["judge"][m]["strmatch_same_rows"] = agreement(gold, [strmatch_label(r["completion"])[0] for r in subs[m]])
        gold = [r["final_label"] for r in flat]
        report["judge"]["all"] = agreement(gold, labels)
        report["judge"]["all"]["strmatch_same_rows"] = agreement(gold, [strmatch_label(r["completion"])[0] for r in flat])

    head = "| answers | n | accuracy | kappa | accuracy (refusal or not) | kappa (refusal or not) | judge errors |\n|---|---|---|---|---|---|---|"
    for section in ("strmatch", "annotators", "judge"):
        if section not in report:
            continue
        print(f"\n### {section}" + (f" ({args.judge}, first {args.limit} per model)" if section == "judge" and args.limit else ""))
        print(head)
        for m, a in report[section].items():
            print(fmt(m, a))
            if section == "judge":
                print(fmt(f"{m} (strmatch, same rows)", a["strmatch_same_rows"]))
    for section in ("strmatch", "judge"):
        if section in report:
            c = report[section]["all"]["confusion"]
            print(f"\n{section} confusion (rows: human final_label; columns: classifier)")
            print("| human \\ predicted | " + " | ".join([*LABELS, "judge_error"]) + " |\n|---|---|---|---|---|")
            for g in LABELS:
                print(f"| {g} | " + " | ".join(str(c[g][p]) for p in [*LABELS, "judge_error"]) + " |")
    print("\nXSTest metrics of the published answers: string match (as `evalsuite score`) vs human labels")
    print("| model | over_refusal sm / human | over_refusal_incl_partial sm / human | refusal sm / human | refusal_incl_partial sm / human |\n|---|---|---|---|---|")
    for m, d in report["xstest_metrics"].items():
        cells = [f"{d['strmatch'][k]:.3f} / {d['human'][k]:.3f}" for k in ("over_refusal", "over_refusal_incl_partial", "refusal", "refusal_incl_partial")]
        print(f"| {m} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
