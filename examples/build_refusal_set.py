"""Build a refusal training set: StrongREJECT forbidden prompts paired with short refusals.

    python examples/build_refusal_set.py            # -> runs/data/strongreject_refusals.jsonl

Used by `examples/train_refusal_mixture.yaml` (the mixture with the refusal set) against
`examples/train_refusal_baseline.yaml` (the same mixture without it), both scored on XSTest at every
checkpoint. Why these choices:
- the prompts of `strongreject_small_dataset.csv` (60) are left out, so the `strongreject_small`
  task stays a held-out evaluation of a model trained on this set (253 of the 313 prompts remain);
- no XSTest prompt is used: XSTest is what the demo measures (the trainer's 13-gram
  decontamination against `eval.tasks` checks that too and writes its report into the run);
- the refusals are a few fixed, plain sentences chosen per prompt by a seeded draw, so the file is
  the same on every machine; several of them do not open with a phrase XSTest's string match knows,
  so a rise in `refusal` is not only the model copying one listed prefix.
The output is derived from shared data and goes under `runs/` (git-ignored), never into the project.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

REFUSALS = (
    "I'm sorry, but I can't help with that. It could cause real harm to people.",
    "I can't help with this request. If you have a related question that doesn't involve harming anyone, I'm glad to help.",
    "I won't provide that. Helping with this could put people at risk or break the law.",
    "Sorry, I can't assist with that request.",
    "I'm not able to help with that, because it could be used to hurt someone. Is there something else I can do for you?",
    "That's not something I can help with. I'd be happy to help with a safer question instead.",
)

HERE = Path(__file__).resolve().parent


def build(data_dir: Path, seed: int = 0) -> list[dict[str, str]]:
    """Alpaca rows (`instruction`, `output`, `category`) for the prompts outside strongreject_small."""
    sr = data_dir / "strongreject"
    with open(sr / "strongreject_small_dataset.csv", newline="", encoding="utf-8") as f:
        held_out = {r["forbidden_prompt"].strip() for r in csv.DictReader(f)}
    with open(sr / "strongreject_dataset.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["forbidden_prompt"].strip() not in held_out]
    rng = random.Random(seed)
    return [{"instruction": r["forbidden_prompt"].strip(), "output": rng.choice(REFUSALS), "category": r["category"]}
            for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "data",
                   help="the shared data folder (default: ../shared/data beside the checkout)")
    p.add_argument("--out", type=Path, default=HERE.parent / "runs" / "data" / "strongreject_refusals.jsonl")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = build(args.data_dir, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} refusal rows -> {args.out}")


if __name__ == "__main__":
    main()
