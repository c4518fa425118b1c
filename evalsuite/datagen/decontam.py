"""Decontamination: n-gram overlap between training rows and every evaluation task's samples.

The method is lm-eval's janitor (and GPT-3's): lowercase, delete ASCII punctuation, split on
whitespace, and call a training row contaminated when it shares a 13-gram with an eval sample's
input or target. Two additions, both for prompts as evalsuite tasks build them:

- Eval texts shorter than n words (a short question) contribute their `min_words`-grams (8 by
  default, GPT-3's floor) instead, so prompt scaffolding ("Question: ... Answer:") around a short
  question cannot hide it; texts under `min_words` words are skipped.
- A task's inputs carry few-shot exemplars and instructions shared by many samples. A paragraph
  (blank-line separated block) found in more than `max(2, 1%)` of a task's samples is template,
  not test content, and is left out; otherwise a training set holding GSM8K *train* exemplars
  would "contaminate" every GSM8K test question.

Keys are Python string hashes of the n-grams (one process), which keeps MMLU's ~1M n-grams small.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evalsuite.datagen.rows import Row, row_text
from evalsuite.errors import UsageError

_TABLE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)


def normalize(text: str) -> list[str]:
    """lm-eval janitor normalisation: ASCII lowercase, punctuation deleted, whitespace split."""
    return text.translate(_TABLE).split()


def ngrams(words: Sequence[str], n: int) -> list[str]:
    """Every word n-gram, joined by spaces (zip of shifted lists: the loop stays in C)."""
    return list(map(" ".join, zip(*(words[i:] for i in range(n))))) if len(words) >= n else []


def kept_blocks(items: Sequence[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    """Each sample's paragraphs, without those shared by many samples of the task (few-shot exemplars,
    instructions): they would match every training text that quotes them and flag the whole task."""
    blocks = [(sid, [b for t in texts for b in t.split("\n\n") if b.strip()]) for sid, texts in items]
    counts = Counter(b for _, bs in blocks for b in set(bs))
    common = max(2, len(items) // 100)
    return [(sid, [b for b in bs if counts[b] <= common]) for sid, bs in blocks]


def gram_size(words: int, n: int, min_words: int) -> int | None:
    """The n-gram size a paragraph of `words` words is matched by: n, else `min_words` for a short one, else
    None (too short to match at all)."""
    size = n if words >= n else min_words
    return size if size and words >= size else None


@dataclass
class EvalIndex:
    """n-gram hash -> the eval samples holding it, for several tasks.

    Owners are integer ids into `owners` ((task, sample id) pairs); the common case of one owner
    per n-gram is a plain int, and only shared n-grams get a list in `shared` (memory and speed).
    """

    n: int = 13
    min_words: int = 8
    grams: dict[int, int] = field(default_factory=dict)
    shared: dict[int, list[int]] = field(default_factory=dict)
    owners: list[tuple[str, str]] = field(default_factory=list)
    lengths: set[int] = field(default_factory=set)  # n-gram sizes in the index (n, and min_words for short texts)
    samples: dict[str, dict[str, str]] = field(default_factory=dict)  # task -> sample id -> text (for examples)
    skipped: dict[str, str] = field(default_factory=dict)  # task -> why it is not in the index (`all` mode)

    def add_task(self, task: str, items: Sequence[tuple[str, list[str]]]) -> None:
        """Register a task's samples: (sample id, its texts: input, target, ...)."""
        self.samples[task] = {}
        grams, shared = self.grams, self.shared
        for sid, kept in kept_blocks(items):
            self.samples[task][sid] = "\n\n".join(kept)
            oid = len(self.owners)
            self.owners.append((task, sid))
            keys: set[int] = set()
            for block in kept:
                words = normalize(block)
                size = gram_size(len(words), self.n, self.min_words)
                if size:
                    self.lengths.add(size)
                    keys.update(map(hash, ngrams(words, size)))
            for key in keys:
                first = grams.setdefault(key, oid)
                if first != oid:
                    shared.setdefault(key, [first]).append(oid)

    def matches(self, text: str) -> list[tuple[str, str, str]]:
        """(task, sample id, matched n-gram) for every eval sample sharing an n-gram with `text`."""
        words = normalize(text)
        found: dict[int, str] = {}
        for size in sorted(self.lengths, reverse=True):
            for gram in ngrams(words, size):
                key = hash(gram)
                if key in self.grams:
                    for oid in self.shared.get(key, (self.grams[key],)):
                        found.setdefault(oid, gram)
        return [(*self.owners[oid], gram) for oid, gram in found.items()]


def sample_texts(sample: Any) -> list[str]:
    """A sample's input (text or chat messages) and, when textual, its target."""
    texts = [sample.input] if isinstance(sample.input, str) else [str(m.get("content", "")) for m in sample.input]
    targets = sample.target if isinstance(sample.target, list) else [sample.target]
    return texts + [t for t in targets if isinstance(t, str)]


def load_eval_index(task_names: Sequence[str], ctx: Any, n: int = 13, min_words: int = 8,
                    skip_unavailable: bool = False) -> EvalIndex:
    """Every sample of every named task (all of them: ctx.limit is ignored, leaks hide anywhere).

    With `skip_unavailable` (the `all` mode), a task that cannot be built without arguments or
    whose data is missing is recorded in `index.skipped` instead of failing the whole scan.
    """
    from evalsuite import registry
    from evalsuite.errors import EvalsuiteError

    index = EvalIndex(n=n, min_words=min_words)
    for name in task_names:
        provider, sep, sub = name.partition(":")
        try:
            try:
                task = registry.get("tasks", provider if sep else name)(*((sub,) if sep else ()))
            except TypeError as exc:
                raise UsageError(f"cannot build task '{name}' for decontamination: {exc}") from exc
            samples = task.load(ctx)
        except EvalsuiteError as exc:
            if not skip_unavailable:
                raise
            index.skipped[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            continue
        index.add_task(name, [(s.id, sample_texts(s)) for s in samples])
    return index


def all_task_names() -> list[str]:
    """Every registered task (built-in and plugins): what `--tasks all` scans."""
    from evalsuite import registry

    return registry.names("tasks")


def scan(rows: Sequence[Row], index: EvalIndex, max_examples: int = 5) -> dict[str, Any]:
    """The contamination report of training rows against an eval index."""
    per_task: dict[str, dict[str, Any]] = {
        t: {"eval_samples": len(s), "contaminated_samples": 0, "fraction": 0.0, "examples": []}
        for t, s in index.samples.items()
    }
    hit_samples: dict[str, set[str]] = {t: set() for t in index.samples}
    bad_rows: list[int] = []
    for i, row in enumerate(rows):
        text = row_text(row)
        found = index.matches(text)
        if found:
            bad_rows.append(i)
        for task, sid, gram in found:
            if sid in hit_samples[task]:
                continue
            hit_samples[task].add(sid)
            if len(per_task[task]["examples"]) < max_examples:
                per_task[task]["examples"].append({
                    "eval_id": sid, "train_row": i, "ngram": gram,
                    "eval_text": _clip(index.samples[task][sid]), "train_text": _clip(text),
                })
    for task, info in per_task.items():
        info["contaminated_samples"] = len(hit_samples[task])
        info["fraction"] = info["contaminated_samples"] / info["eval_samples"] if info["eval_samples"] else 0.0
    return {"method": f"{index.n}-gram overlap (lm-eval janitor normalisation)", "n": index.n,
            "min_words": index.min_words, "train_rows": len(rows), "contaminated_rows": bad_rows,
            "tasks": per_task, "skipped_tasks": dict(index.skipped)}


def decontaminate(train_rows: Sequence[Row], task_names: Sequence[str], ctx: Any, n: int = 13,
                  min_words: int = 8, skip_unavailable: bool = False) -> dict[str, Any]:
    """What `evalsuite train` calls: the report for training rows against its eval tasks.

    `report["contaminated_rows"]` are row indices; `drop_contaminated` removes them.
    """
    return scan(train_rows, load_eval_index(task_names, ctx, n=n, min_words=min_words,
                                            skip_unavailable=skip_unavailable))


def drop_contaminated(rows: Sequence[Row], report: dict[str, Any]) -> list[Row]:
    bad = set(report["contaminated_rows"])
    return [r for i, r in enumerate(rows) if i not in bad]


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per task, for the terminal and for `compare`."""
    lines = [(f"{report['train_rows']} training rows, {len(report['contaminated_rows'])} contaminated "
              f"({report['n']}-gram overlap)")]
    for task, info in report["tasks"].items():
        lines.append(f"  {task}: {info['contaminated_samples']}/{info['eval_samples']} eval samples "
                     f"({100 * info['fraction']:.1f}%) have a contaminated training twin")
    for task, why in report.get("skipped_tasks", {}).items():
        lines.append(f"  {task}: skipped ({why})")
    return lines


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
