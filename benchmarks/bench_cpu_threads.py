"""Generation speed with torch's default CPU threads vs one thread, on a quiet and on a loaded machine.

Each setting runs in a fresh process (torch fixes its thread pool at first use): greedy generation of
`--tokens` tokens for one GSM8K-sized prompt with the HF backend on the embedded SmolLM2. "Loaded" starts
`--busy` processes that spin on the CPU for the measurement, as other jobs on a shared machine do. The
machine's load average at the start of each measurement is printed with it.

    python benchmarks/bench_cpu_threads.py [--tokens 32] [--busy 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
from evalsuite.backends.hf import HFBackend
from evalsuite.records import GenerateRequest
threads, tokens = sys.argv[1], int(sys.argv[2])
be = HFBackend("smollm2-135m", num_threads=int(threads) if threads.isdigit() else threads)
prompt = "Question: " + " ".join(["Natalia sold clips to 48 of her friends in April."] * 12) + "\nAnswer:"
req = GenerateRequest(prompt=prompt, max_tokens=tokens)
be.generate([GenerateRequest(prompt="Hi", max_tokens=2)], lambda i, o: None)  # warm-up
t0 = time.perf_counter(); out = []
be.generate([req], lambda i, o: out.append(o))
wall = time.perf_counter() - t0
print(json.dumps({"threads": be.info()["cpu_threads"], "tok_s": out[0].tokens_out / wall}))
"""


def _spin(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def measure(threads: str, tokens: int) -> dict:
    load = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, "-c", CHILD, threads, str(tokens)], capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load_avg": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--busy", type=int, default=4, help="spinning processes for the loaded case")
    ap.add_argument("--device", default="cpu", choices=["cpu"], help="this benchmark is about CPU threads")
    args = ap.parse_args()
    rows = []
    for machine in ("quiet", "loaded"):
        spinners = []
        if machine == "loaded":
            stop_at = time.time() + 3600
            spinners = [mp.Process(target=_spin, args=(stop_at,), daemon=True) for _ in range(args.busy)]
            for s in spinners:
                s.start()
            time.sleep(5)
        try:
            for threads in ("default", "1"):
                r = measure(str(os.cpu_count()) if threads == "default" else threads, args.tokens)
                rows.append((machine, threads, r))
                print(f"{machine:7s} threads={threads:8s} {r['tok_s']:6.2f} tok/s  (load avg {r['load_avg']:.1f}; {r['threads']})",
                      flush=True)
        finally:
            for s in spinners:
                s.terminate()
    for machine in ("quiet", "loaded"):
        d, one = (r["tok_s"] for m, _, r in rows if m == machine)
        print(f"{machine}: one thread is {one / d:.2f}x torch's default threads")


if __name__ == "__main__":
    main()
