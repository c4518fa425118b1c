"""Training-data provenance: what a checkpoint was trained on, checked against the samples it is scored on.

`evalsuite train` decontaminates its data against its own `eval.tasks`, but a checkpoint scored later on
another task (`evalsuite run --model <run>/checkpoints/step-30 --tasks winrate`) would be scored on
prompts it may have trained on without anyone saying so. So the trainer fingerprints its training
conversations once per run: every 13-gram and 8-gram (what eval texts under 13 words are matched by),
with the n-gram normalisation of `evalsuite.datagen.decontam` (lm-eval's janitor), hashed to a stable
64-bit key (built on blake2b, so any process can read them; decontam's in-process `hash()` keys are
not stable across processes), stored as one sorted uint64 array (`training_ngrams.npy`, 8 bytes per
distinct key). Each checkpoint gets a small manifest (`training_data.json`: datasets, counts, n, the
file's sha256 and its relative path), so checkpoints stay small. At eval time each task's samples (their input and target, template
paragraphs left out exactly as decontam leaves them out) are looked up in the array: a sample sharing
one n-gram with the training data is an overlapping sample. The result is one warning line per task
and a typed `contamination` entry in results.json.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evalsuite.datagen.decontam import gram_size, kept_blocks, normalize, sample_texts
from evalsuite.runlog import Contamination, RunResults

MANIFEST = "training_data.json"
FINGERPRINTS = "training_ngrams.npy"
HASH = ("polynomial mod 2**64 (seed n, multiplier 0x9E3779B97F4A7C15) over blake2b-64 keys of the "
        "janitor-normalised words")
_MULT = np.uint64(0x9E3779B97F4A7C15)
FORMAT = 1


# ---------------------------------------------------------------------------- fingerprints
def gram_hashes(words: Sequence[str], n: int) -> np.ndarray:
    """Stable uint64 keys of every word n-gram of normalised `words`, unsorted.

    A key is a polynomial (mod 2**64, seeded by n) over the words' blake2b-64 keys: each word is
    hashed once and the n-grams roll up in numpy, far faster than hashing every joined n-gram.
    """
    return _roll(_word_keys(words), n) if len(words) >= n >= 1 else np.zeros(0, dtype=np.uint64)


def fingerprint(texts: Iterable[str], n: int = 13, min_words: int = 8, chunk: int = 2000) -> np.ndarray:
    """The sorted set of keys of all texts' n-grams and `min_words`-grams, chunk by chunk.

    Both sizes share one array (they hash different strings, with different seeds): an eval text
    under n words is matched by its `min_words`-grams, as decontam matches it.
    """
    parts: list[np.ndarray] = [np.zeros(0, dtype=np.uint64)]
    batch: list[list[str]] = []
    for text in texts:
        batch.append(normalize(text))
        if len(batch) >= chunk:
            parts.append(_chunk_keys(batch, n, min_words))
            batch = []
    if batch:
        parts.append(_chunk_keys(batch, n, min_words))
    return _distinct(np.concatenate(parts))


def _chunk_keys(texts: Sequence[list[str]], n: int, min_words: int) -> np.ndarray:
    """The distinct keys of many word lists at once: one rolling pass over them all, windows that
    cross from one text into the next masked out."""
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    words = _word_keys(list(itertools.chain.from_iterable(texts)))
    left = np.repeat(np.cumsum(lens), lens) - np.arange(words.size)  # words from here to its text's end
    found = [np.zeros(0, dtype=np.uint64)]
    for size in {n, min_words} - {0}:
        if words.size >= size:
            found.append(_roll(words, size)[left[: words.size - size + 1] >= size])
    return _distinct(np.concatenate(found))


def _roll(w: np.ndarray, n: int) -> np.ndarray:
    width = w.size - n + 1
    key = np.full(width, n, dtype=np.uint64)
    for i in range(n):
        key = key * _MULT + w[i:i + width]
    return key


def _word_keys(words: Sequence[str]) -> np.ndarray:
    return np.fromiter(map(_word_key, words), dtype=np.uint64, count=len(words))


@functools.lru_cache(maxsize=1 << 20)
def _word_key(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def _distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct keys (by sorting: numpy 2's hash-based `np.unique` is ~10x slower on uint64)."""
    keys = np.sort(keys)
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if keys.size else keys


def write_fingerprints(folder: Path, datasets: Sequence[tuple[str, Sequence[str]]], n: int = 13,
                       min_words: int = 8) -> Path:
    """Write `training_ngrams.npy` and its manifest into `folder` (the run dir); returns the manifest path.

    `datasets` is `(name, texts)` per training dataset: the texts trained on, one per conversation.
    """
    keys = fingerprint((t for _, texts in datasets for t in texts), n, min_words)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (FINGERPRINTS + ".partial")
    with tmp.open("wb") as f:
        np.save(f, keys, allow_pickle=False)
    os.replace(tmp, folder / FINGERPRINTS)
    manifest = {
        "format": FORMAT, "n": n, "min_words": min_words, "hash": HASH, "fingerprints": FINGERPRINTS,
        "sha256": _sha256(folder / FINGERPRINTS), "ngrams": int(keys.size),
        "conversations": sum(len(texts) for _, texts in datasets),
        "datasets": [{"name": name, "conversations": len(texts)} for name, texts in datasets],
    }
    _write_json(folder / MANIFEST, manifest)
    return folder / MANIFEST


def link(source: Path, target: Path, copy: bool = False) -> bool:
    """Give folder `target` a manifest pointing at `source`'s fingerprints (relative path), or a copy of them.

    `source` holds a manifest (a run dir or a checkpoint); nothing happens when it has none. A copy
    (`copy=True`, for exports) makes the target self-contained. Returns whether a manifest was written.
    """
    manifest = read_manifest(source)
    if manifest is None:
        return False
    data = (source / manifest["fingerprints"]).resolve()
    target.mkdir(parents=True, exist_ok=True)
    if copy and data.is_file():
        shutil.copyfile(data, target / FINGERPRINTS)
        manifest["fingerprints"] = FINGERPRINTS
    else:
        manifest["fingerprints"] = os.path.relpath(data, target.resolve())
    _write_json(target / MANIFEST, manifest)
    return True


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """A folder's manifest, or None when it has none (any model that is not a trainer checkpoint)."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if not (isinstance(manifest, dict) and isinstance(manifest.get("fingerprints"), str)
            and isinstance(manifest.get("n"), int) and isinstance(manifest.get("min_words") or 0, int)):
        raise ValueError("not a training-data manifest (needs 'fingerprints', 'n' and a whole-number 'min_words')")
    return manifest


def load(folder: Path) -> tuple[dict[str, Any] | None, np.ndarray | None, str | None]:
    """(manifest, fingerprints, why not) for a checkpoint folder; the message says why nothing can be checked."""
    try:
        manifest = read_manifest(folder)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, None, f"{folder / MANIFEST} is unreadable ({exc}): training-data overlap not checked"
    if manifest is None:
        return None, None, None
    path = (folder / manifest["fingerprints"]).resolve()
    if not path.is_file():
        return manifest, None, (f"training-data fingerprints not found ({path}, named by {folder / MANIFEST}; "
                                "the checkpoint was moved without its run): training-data overlap not checked")
    if manifest.get("sha256") and _sha256(path) != manifest["sha256"]:
        return manifest, None, (f"training-data fingerprints {path} do not match {folder / MANIFEST} (sha256 "
                                "differs: overwritten by another run?): training-data overlap not checked")
    try:
        keys = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
        return manifest, None, f"{path} is not a fingerprint array ({exc}): training-data overlap not checked"
    return manifest, np.asarray(keys, dtype=np.uint64), None


# ---------------------------------------------------------------------------- checking eval samples
def overlap(name: str, samples: Sequence[Any], keys: np.ndarray, n: int = 13,
            min_words: int = 8) -> tuple[list[str], int]:
    """(ids of the samples sharing an n-gram with `keys`, how many samples are too short to check).

    A sample's texts are its input and textual target; paragraphs shared by many samples of the
    task (few-shot exemplars, instructions) are left out, as decontam's EvalIndex leaves them out,
    and a paragraph under n words is matched by its `min_words`-grams (one under that is skipped).
    """
    owners: list[np.ndarray] = []
    hashes: list[np.ndarray] = []
    kept = kept_blocks([(s.id, sample_texts(s)) for s in samples])
    ids = [sid for sid, _ in kept]
    unchecked = 0
    for i, (_, blocks) in enumerate(kept):
        found = [np.zeros(0, dtype=np.uint64)]
        for words in map(normalize, blocks):
            if size := gram_size(len(words), n, min_words):
                found.append(gram_hashes(words, size))
        h = np.concatenate(found)
        unchecked += h.size == 0
        hashes.append(h)
        owners.append(np.full(h.size, i, dtype=np.int64))
    if not keys.size or not hashes:
        return [], unchecked
    flat, owner = np.concatenate(hashes), np.concatenate(owners)
    pos = np.minimum(np.searchsorted(keys, flat), keys.size - 1)
    hit = sorted(set(owner[keys[pos] == flat].tolist()))
    return [ids[i] for i in hit], unchecked


def model_folder(model: str | None) -> Path | None:
    """The local folder a `--model` spec names (`hf:`/`vllm:` prefixes stripped), or None."""
    if not model:
        return None
    from evalsuite import registry

    prefix, sep, rest = model.partition(":")
    if sep and prefix in registry.names("backends"):
        model = rest
    path = Path(model).expanduser()
    return path if path.is_dir() else None


def check_model(model: str | None, samples: Mapping[str, Sequence[Any]]) -> dict[str, Contamination]:
    """What `evalsuite run` calls once the samples are loaded: overlap per task, one warning line per
    overlapping task (a clean task is recorded, not printed: the trainer scores every checkpoint).

    Empty when the model is not a trainer checkpoint (no manifest) or its fingerprints are missing
    (then one info line says so): this never fails a run.
    """
    from rich.markup import escape

    from evalsuite.progress import console

    folder = model_folder(model)
    if folder is None:
        return {}
    manifest, keys, why = load(folder)
    if why:
        console.print(f"[dim]info: {escape(why)}[/dim]", soft_wrap=True)
    if manifest is None or keys is None:
        return {}
    n, min_words = int(manifest["n"]), int(manifest.get("min_words") or 0)
    source = [str(d.get("name")) for d in manifest.get("datasets") or [] if isinstance(d, dict)]
    path = str((folder / manifest["fingerprints"]).resolve())
    found: dict[str, Contamination] = {}
    for name, task_samples in samples.items():
        ids, unchecked = overlap(name, task_samples, keys, n, min_words)
        found[name] = Contamination(n=len(task_samples), overlapping=len(ids), ids=ids, ngram=n, min_words=min_words,
                                    unchecked=unchecked, source=source, fingerprints=path)
        if ids:
            console.print(f"[yellow]warning: {escape(line(name, found[name]))}; scores may be inflated[/yellow]",
                          soft_wrap=True, highlight=False)
    return found


def line(task: str, c: Contamination) -> str:
    """`winrate: 244/252 samples share a 13-gram with this checkpoint's training data (datasets)`."""
    short = f"; {c.unchecked} too short to check" if c.unchecked else ""
    return (f"{task}: {c.overlapping}/{c.n} samples share a {c.ngram}-gram with this checkpoint's training data "
            f"({', '.join(c.source) or 'unnamed datasets'}){short}")


def summary_lines(results: RunResults, tasks: Sequence[str] | None = None) -> list[str]:
    """The typed entries of a run, one line per task (of `tasks`, when given: what `compare` compares)."""
    return [line(task, t.contamination) for task, t in results.tasks.items()
            if t.contamination is not None and (tasks is None or task in tasks)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
