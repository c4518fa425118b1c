"""HF vs vLLM on the same model and requests: where do the two backends disagree, and does it matter?

    python benchmarks/bench_hf_vs_vllm_parity.py --data-dir ../shared/data --mmlu 100 --gsm8k 20 [--dtype float32] [--device cuda]

Users report that lm-eval's HF and vLLM paths give different scores; this makes the difference
visible. MMLU (log-likelihood): per-request |Δ log-prob|, per-question agreement of the chosen
letter, near ties (HF's top-2 margin under --tie nats) and how many disagreements they explain,
accuracy of each and McNemar's exact test on the paired per-question correctness. GSM8K (greedy
generation): identical texts, shared prefix, agreement of the extracted answer, accuracy of each
and the paired test. Greedy texts diverge after the first near-tie token (SmolLM2 has many), so
identical text is not expected everywhere; the paired test says whether the scores differ.
`--device` places the HF backend (float32 either way); vLLM runs where its build does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _device import add_device_flag, check_device, device_label
from bench_backends import REPO, load_requests, run_backend


def scores(task: object, samples: list, reqs: list, outputs: list) -> list:
    """Per-sample Score objects from flat outputs (requests are per sample, in order)."""
    out, k = [], 0
    for s, rs in zip(samples, reqs):
        out.append(task.score(s, outputs[k:k + len(rs)]))  # type: ignore[attr-defined]
        k += len(rs)
    return out


def paired(a: list[float], b: list[float]) -> str:
    try:
        from evalsuite.stats import paired_test
    except ImportError:
        return "(evalsuite.stats.paired_test not available)"
    t = paired_test(a, b)
    return str(t)


def report_choices(label: str, reqs: list, hf: tuple, vllm: tuple, tie: float) -> None:
    """Per-request |Δ log-prob|, per-question agreement, near ties and the paired test of a choice task."""
    (h_out, h_sc, h_wall), (v_out, v_sc, v_wall) = hf, vllm
    deltas = sorted(abs(h.logprob - v.logprob) for h, v in zip(h_out, v_out))
    greedy_same = sum(h.is_greedy == v.is_greedy for h, v in zip(h_out, v_out))
    margins, k = [], 0  # HF's top-2 margin per question: a near tie may flip on rounding alone
    for rs in reqs:
        lps = sorted((o.logprob for o in h_out[k:k + len(rs)]), reverse=True)
        margins.append(lps[0] - lps[1] if len(lps) > 1 else float("inf"))
        k += len(rs)
    differ = [q for q, (a, b) in enumerate(zip(h_sc, v_sc)) if a.answer != b.answer]
    tied = [q for q in differ if margins[q] < tie]
    ha = [s.values["acc"] for s in h_sc]
    va = [s.values["acc"] for s in v_sc]
    n = len(h_sc)
    print(f"\n{label}: {n} questions, {len(deltas)} log-likelihood requests")
    print(f"  |Δ logprob| max {deltas[-1]:.2e}  p95 {deltas[int(0.95 * (len(deltas) - 1))]:.2e}  "
          f"median {statistics.median(deltas):.2e}  mean {statistics.mean(deltas):.2e}; same is_greedy {greedy_same}/{len(deltas)}")
    print(f"  same chosen answer: {n - len(differ)}/{n} ({(n - len(differ)) / n:.1%}); HF near ties (< {tie} nats): "
          f"{sum(m < tie for m in margins)}; disagreements that are near ties: {len(tied)}/{len(differ)}")
    print(f"  acc hf {statistics.mean(ha):.3f}  vllm {statistics.mean(va):.3f}; paired: {paired(ha, va)}")
    print(f"  wall hf {h_wall:.1f}s  vllm {v_wall:.1f}s")


def load_choice_task(name: str, data_dir: str, n: int) -> tuple:
    from evalsuite import registry
    from evalsuite.task import TaskContext

    task = registry.get("tasks", name)()
    samples = task.load(TaskContext.from_env(data_dir))[:n] if n else []
    return task, samples, [task.requests(s) for s in samples]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("EVALSUITE_DATA_DIR", os.path.join(REPO, "..", "shared", "data")))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--mmlu", type=int, default=100)
    ap.add_argument("--gsm8k", type=int, default=20)
    ap.add_argument("--arc", type=int, default=50, help="ARC-Easy questions (multi-token choices: prompt log-probs)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--dtype", default="float32", help="vLLM dtype (HF runs float32)")
    ap.add_argument("--tie", type=float, default=0.05, help="near-tie margin in nats")
    ap.add_argument("--mem", type=float, default=0.3)
    ap.add_argument("--enforce-eager", action="store_true")
    add_device_flag(ap)
    args = ap.parse_args()
    check_device(args.device)

    from evalsuite.backends import models
    from evalsuite.backends.hf import HFBackend
    from evalsuite.backends.vllm import VLLMBackend

    data = load_requests(args.data_dir, args.gsm8k, args.mmlu, args.max_tokens)
    data["arc_easy"] = load_choice_task("arc_easy", args.data_dir, args.arc)
    path = models.resolve(args.model).path
    results = {}
    for name, factory in (("hf", lambda: HFBackend(path, dtype="float32", device=args.device)),
                          ("vllm", lambda: VLLMBackend(path, dtype=args.dtype, enforce_eager=args.enforce_eager,
                                                       gpu_memory_utilization=args.mem))):
        backend = factory()
        per_task = {}
        for task_name, method in (("mmlu", "loglikelihood"), ("arc_easy", "loglikelihood"), ("gsm8k", "generate")):
            task, samples, reqs = data[task_name]
            outs, wall = run_backend(backend, method, [r for rs in reqs for r in rs])
            per_task[task_name] = (outs, scores(task, samples, reqs, outs), wall)
        backend.close()
        results[name] = per_task

    print(f"model {args.model}; vLLM dtype {args.dtype}; HF float32 on {device_label(args.device)}")
    for name in ("mmlu", "arc_easy"):
        if data[name][1]:
            report_choices(name, data[name][2], results["hf"][name], results["vllm"][name], args.tie)
    _, gsm_samples, _ = data["gsm8k"]
    if gsm_samples:
        (h_out, h_sc, h_wall), (v_out, v_sc, v_wall) = results["hf"]["gsm8k"], results["vllm"]["gsm8k"]
        same_text = sum(h.text == v.text for h, v in zip(h_out, v_out))
        prefix = [1.0 if h.text == v.text else len(os.path.commonprefix([h.text, v.text])) / max(len(h.text), len(v.text))
                  for h, v in zip(h_out, v_out)]  # two empty answers are identical, not 0% shared
        same_answer = sum(a.answer == b.answer for a, b in zip(h_sc, v_sc))
        metric = next(iter(h_sc[0].values))
        ha = [s.values[metric] for s in h_sc]
        va = [s.values[metric] for s in v_sc]
        print(f"\nGSM8K: {len(gsm_samples)} greedy generations (max_tokens={args.max_tokens})")
        print(f"  identical text: {same_text}/{len(h_out)}; same extracted answer: {same_answer}/{len(h_sc)}; "
              f"mean shared prefix {statistics.mean(prefix):.1%} of the longer text")
        print(f"  {metric} hf {statistics.mean(ha):.3f}  vllm {statistics.mean(va):.3f}; paired: {paired(ha, va)}")
        print(f"  wall hf {h_wall:.1f}s  vllm {v_wall:.1f}s")


if __name__ == "__main__":
    main()
