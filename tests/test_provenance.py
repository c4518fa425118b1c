"""Training-data provenance: a checkpoint's training n-grams, checked against the samples it is scored on.

Real data throughout: Self-Instruct's 252 user-oriented prompts are both a training set (the quick
demo trains on them) and winrate's default eval set; GSM8K's train split against its test split.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from evalsuite import provenance, registry
from evalsuite.datagen.decontam import EvalIndex, sample_texts, scan
from evalsuite.datagen.rows import row_text
from evalsuite.records import Output
from evalsuite.rundir import load_run
from evalsuite.runner import RunConfig, run_eval, score_outputs
from evalsuite.task import TaskContext
from evalsuite.trainers import contamination, data
from evalsuite.trainers.config import DatasetSpec

# winrate's prompts under 8 words in every paragraph: no n-gram to look up (decontam skips them too)
WINRATE_TOO_SHORT = 3


def _convs(shared: Path, name: str) -> list[data.Conversation]:
    return data.load_dataset_spec(DatasetSpec(path=str(shared / "self_instruct" / f"{name}.jsonl")))


def _samples(task: str, shared: Path) -> list:
    return registry.get("tasks", task)().load(TaskContext.from_env(shared))


def _fake_checkpoint(tmp: Path, shared: Path) -> Path:
    """A run dir with the trainer's fingerprints of Self-Instruct, and a checkpoint folder linked to them."""
    convs = _convs(shared, "user_oriented_instructions")
    run = tmp / "run"
    contamination.fingerprint(run, [convs], ["user_oriented_instructions"])
    ckpt = run / "checkpoints" / "step-3"
    assert provenance.link(run, ckpt)
    return ckpt


class FixedBackend:
    """Answers every request with the same text: a run that needs no weights."""

    model_name, fingerprint = "fixed", "fixed-1"

    def generate(self, requests, done):
        for i, _ in enumerate(requests):
            done(i, Output(texts=["an answer"]))

    def loglikelihood(self, requests, done):
        raise AssertionError("not used")

    def info(self):
        return {"backend": "fixed"}

    def close(self):
        pass


def test_winrate_overlaps_self_instruct_training_data_and_agrees_with_decontam(shared_data: Path, tmp_path: Path) -> None:
    """Training on the 252 user-oriented prompts: 249 of winrate's 252 samples share an n-gram (3 are too
    short); training on the 175 seed tasks: none. The set equals what decontam's scan finds.

    Catches: different normalisation or n-gram size from decontam, template paragraphs not left out,
    an unstable hash, a lookup that misses keys (searchsorted off by one), the target left out."""
    samples = _samples("winrate", shared_data)
    for name, expected in (("user_oriented_instructions", 249), ("seed_tasks", 0)):
        convs = _convs(shared_data, name)
        contamination.fingerprint(tmp_path / name, [convs], [name])
        manifest, keys, why = provenance.load(tmp_path / name)
        assert why is None and manifest["n"] == 13 and manifest["conversations"] == len(convs)
        assert keys.dtype == np.uint64 and np.all(keys[1:] > keys[:-1])  # sorted, distinct
        ids, unchecked = provenance.overlap("winrate", samples, keys)
        assert (len(ids), unchecked) == (expected, WINRATE_TOO_SHORT)
        index = EvalIndex()
        index.add_task("winrate", [(s.id, sample_texts(s)) for s in samples])
        report = scan([{"messages": c.messages} for c in convs], index)
        assert report["tasks"]["winrate"]["contaminated_samples"] == expected
    # the targets count too: an answer copied into training is found without its prompt
    outputs_only = [r["instances"][0]["output"] for r in map(json.loads, (shared_data / "self_instruct" /
                    "user_oriented_instructions.jsonl").open()) if len(r["instances"][0]["output"].split()) >= 13][:20]
    ids, _ = provenance.overlap("winrate", samples, provenance.fingerprint(outputs_only))
    assert len(ids) == 20


def test_keys_are_decontams_ngrams_one_to_one(shared_data: Path) -> None:
    """Over the 175 Self-Instruct seed tasks, the fingerprint holds exactly one key per distinct 13-gram and
    8-gram string that decontam's `ngrams` makes (chunked in 7s: windows across two texts are not keys).

    Catches: n-grams that run from one text into the next, a word left out of the rolling key, the
    8-grams missing, colliding sizes."""
    from evalsuite.datagen.decontam import ngrams, normalize

    texts = [row_text({"messages": c.messages}) for c in _convs(shared_data, "seed_tasks")]
    grams = {(size, g) for t in texts for size in (13, 8) for g in ngrams(normalize(t), size)}
    assert provenance.fingerprint(texts, chunk=7).size == len(grams) == provenance.fingerprint(texts).size
    assert provenance.fingerprint(texts, min_words=0).size == sum(size == 13 for size, _ in grams)
    one = normalize(texts[0])
    assert list(provenance.gram_hashes(one, 13)) == [provenance.gram_hashes(one[i:i + 13], 13)[0]
                                                     for i in range(len(one) - 12)]


def test_gsm8k_train_split_against_test_split(shared_data: Path) -> None:
    """GSM8K's 7,473 training problems share a 13-gram with exactly 6 of its 1,319 test problems
    (near-duplicate problems, e.g. test 581's "the first movie is 1 hour and 30 minutes long while the
    second"); its few-shot exemplars (training problems) do not make every test sample overlap.

    Catches: few-shot scaffolding counted as test content (1,319/1,319), 8-grams used for long texts."""
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "train.jsonl").open()]
    keys = provenance.fingerprint(row_text(r) for r in rows)
    samples = _samples("gsm8k", shared_data)
    ids, unchecked = provenance.overlap("gsm8k", samples, keys)
    assert sorted(ids, key=int) == ["18", "581", "602", "632", "712", "806"] and unchecked == 0


def test_manifest_round_trip_move_and_export_copy(shared_data: Path, tmp_path: Path) -> None:
    """The fingerprints are stored once per run; a checkpoint's manifest points at them by relative
    path (the run can move whole); a checkpoint copied away alone says "not found"; a changed file is
    caught by its sha256; an export copy is self-contained.

    Catches: absolute paths in the manifest, the array copied into every checkpoint, a stale file read."""
    ckpt = _fake_checkpoint(tmp_path, shared_data)
    manifest = json.loads((ckpt / provenance.MANIFEST).read_text())
    assert manifest["fingerprints"] == "../../training_ngrams.npy" and not (ckpt / provenance.FINGERPRINTS).exists()
    assert manifest["datasets"] == [{"name": "user_oriented_instructions", "conversations": 252}]
    _, keys, _ = provenance.load(ckpt)
    assert keys.size == manifest["ngrams"] > 0

    moved = tmp_path / "moved"
    shutil.move(tmp_path / "run", moved)  # the whole run moves: still found
    ckpt = moved / "checkpoints" / "step-3"
    assert provenance.load(ckpt)[2] is None

    alone = tmp_path / "alone"
    shutil.copytree(ckpt, alone)  # the checkpoint without its run
    m, keys, why = provenance.load(alone)
    assert m is not None and keys is None and "training-data fingerprints not found" in why

    export = tmp_path / "export" / "merged"
    assert provenance.link(ckpt, export, copy=True)
    shutil.rmtree(moved)
    _, keys, why = provenance.load(export)
    assert why is None and keys.size == manifest["ngrams"]

    np.save(export / provenance.FINGERPRINTS, keys[:10])  # overwritten by something else
    assert "sha256 differs" in provenance.load(export)[2]
    (export / provenance.FINGERPRINTS).write_text("not numpy")
    manifest = json.loads((export / provenance.MANIFEST).read_text())
    (export / provenance.MANIFEST).write_text(json.dumps({**manifest, "sha256": None}))
    assert "is not a fingerprint array" in provenance.load(export)[2]
    assert provenance.load(tmp_path) == (None, None, None)  # no manifest: nothing to say
    (tmp_path / provenance.MANIFEST).write_text("[1, 2]")
    assert "unreadable" in provenance.load(tmp_path)[2]


def test_run_records_overlap_per_task_and_compare_shows_it(shared_data: Path, tmp_path: Path, capsys) -> None:
    """`run --model CHECKPOINT`: one warning line for the overlapping task, a typed `contamination` entry
    in results.json for each task (zero for ifeval), kept by `score --run-dir`, shown by compare; a
    checkpoint moved without its run prints the info line and records nothing.

    Catches: the check not wired into run_eval, the entry not reaching results.json, re-scoring dropping
    it, compare not reading the typed field."""
    from evalsuite.reports.compare import compare

    ckpt = _fake_checkpoint(tmp_path, shared_data)
    cfg = RunConfig(tasks=["winrate", "ifeval"], model=str(ckpt), data_dir=str(shared_data), limit=5,
                    output_dir=str(tmp_path / "runs"), use_cache=False, show_table=False)
    run = load_run(run_eval(cfg, backend=FixedBackend()))
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "scores may be inflated" in line]
    assert warnings == ["warning: winrate: 5/5 samples share a 13-gram with this checkpoint's training data "
                        "(user_oriented_instructions); scores may be inflated"]
    stored = json.loads((run.path / "results.json").read_text())["tasks"]
    c = stored["winrate"]["contamination"]
    assert (c["n"], c["overlapping"], c["ngram"], c["source"]) == (5, 5, 13, ["user_oriented_instructions"])
    assert c["ids"] == [f"user_oriented_task_{i}" for i in range(5)]
    assert stored["ifeval"]["contamination"]["overlapping"] == 0 and stored["ifeval"]["contamination"]["n"] == 5

    again = load_run(score_outputs(RunConfig(tasks=["winrate", "ifeval"], output_dir=str(tmp_path / "re"),
                                             show_table=False), run_dir=str(run.path)))
    assert again.tasks["winrate"].contamination == run.tasks["winrate"].contamination

    comp = compare([run, again])
    lines = next(iter(comp.decontamination.values()))
    assert any(line.startswith("winrate: 5/5 samples share a 13-gram") for line in lines)
    only_ifeval = next(iter(compare([run, again], tasks=["ifeval"]).decontamination.values()))
    assert not any(line.startswith("winrate:") for line in only_ifeval), "a task not compared is not listed"

    alone = tmp_path / "alone"
    shutil.copytree(ckpt, alone)
    cfg.model, cfg.output_dir = str(alone), str(tmp_path / "runs2")
    run = load_run(run_eval(cfg, backend=FixedBackend()))
    assert "training-data fingerprints not found" in capsys.readouterr().err.replace("\n", "")
    assert run.tasks["winrate"].contamination is None


def test_a_model_that_is_not_a_checkpoint_is_not_checked(tmp_path: Path) -> None:
    """Hub ids, aliases, prefixed specs and plain model folders: no check, no message, no error."""
    assert provenance.check_model("smollm2-135m", {"t": []}) == {}
    assert provenance.check_model("openai:gpt-4o", {"t": []}) == {}
    assert provenance.check_model(None, {"t": []}) == {}
    assert provenance.model_folder(f"hf:{tmp_path}") == tmp_path
    assert provenance.check_model(str(tmp_path), {"t": []}) == {}


def _train_config(tmp: Path, model: Path, shared: Path, **over) -> Path:
    cfg = {
        "model": str(model), "output_dir": str(tmp / "runs"), "run_name": "t", "seed": 3,
        "data": {"datasets": [{"path": str(shared / "self_instruct" / "user_oriented_instructions.jsonl"), "limit": 12}],
                 "max_seq_len": 96, "val_fraction": 0.2, "val_max": 2},
        "training": {"max_steps": 2, "micro_batch_size": 2, "grad_accum": 1, "lr": 1e-2, "num_threads": 1},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "eval": {"every": 2, "at_start": True},
        **over,
    }
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evalsuite.cli", *args], capture_output=True, text=True, timeout=600,
                          check=False, env={**os.environ, "COLUMNS": "200"})


@pytest.mark.slow
def test_real_train_then_run_checkpoint_warns(tiny_model_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    """A real `evalsuite train` on 12 Self-Instruct prompts (2 held out for validation), then `evalsuite run
    --model <checkpoint> --tasks winrate,ifeval --limit 12`: the warning names the 10 trained-on prompts,
    results.json records their ids, ifeval records zero; the merged export carries the fingerprints.

    Catches: the trainer not writing fingerprints, the validation split fingerprinted as trained on,
    the checkpoint manifest missing (or given to step 0, which trained on nothing), the CLI not
    checking, the export not copying them."""
    proc = _cli("train", str(_train_config(tmp_path, tiny_model_dir, shared_data)), "--export", "merged")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "t"
    assert (run / provenance.FINGERPRINTS).is_file()
    ckpt = run / "checkpoints" / "step-2"
    manifest = json.loads((ckpt / provenance.MANIFEST).read_text())
    assert manifest["conversations"] == 10 and manifest["fingerprints"] == "../../training_ngrams.npy"
    assert not (run / "checkpoints" / "step-0" / provenance.MANIFEST).exists()  # the untouched model saw nothing

    for model, out in ((ckpt, "evals"), (run / "export" / "merged", "evals-export")):
        proc = _cli("run", "--model", str(model), "--tasks", "winrate,ifeval", "--limit", "12", "--data-dir",
                    str(shared_data), "--output-dir", str(tmp_path / out), "--no-cache",
                    "-T", "winrate.max_tokens=4", "-T", "ifeval.max_tokens=4")
        assert proc.returncode == 0, proc.stderr[-3000:]
        err = proc.stderr.replace("\n", "")
        assert ("winrate: 10/12 samples share a 13-gram with this checkpoint's training data "
                "(user_oriented_instructions); scores may be inflated") in err
        results = json.loads(next((tmp_path / out).glob("*/results.json")).read_text())
        c = results["tasks"]["winrate"]["contamination"]
        held_out = {f"user_oriented_task_{i}" for i in range(12)} - set(c["ids"])
        assert (c["overlapping"], c["n"], len(held_out)) == (10, 12, 2)
        assert results["tasks"]["ifeval"]["contamination"]["overlapping"] == 0


@pytest.mark.slow
def test_fingerprints_off_writes_none_and_keeps_the_run_fingerprint(tiny_model_dir: Path, shared_data: Path,
                                                                   tmp_path: Path) -> None:
    """`data.fingerprints: false`: the recipe's setup writes no n-gram array and no manifest, and the run's
    resume fingerprint is the same as with it on (a disk policy, not what is trained).

    Catches: the switch ignored (the array written anyway), or counted in the run fingerprint (a run
    could not resume after turning it off)."""
    from evalsuite.trainers import config
    from evalsuite.trainers.recipe import Recipe

    raw = yaml.safe_load(_train_config(tmp_path, tiny_model_dir, shared_data).read_text())
    on = config.TrainConfig.model_validate(raw)
    off = config.TrainConfig.model_validate({**raw, "data": {**raw["data"], "fingerprints": False}})
    assert on.fingerprint() == off.fingerprint()
    for name, cfg in (("on", on), ("off", off)):
        run_dir = tmp_path / name
        run_dir.mkdir()
        Recipe(cfg, run_dir).setup()
        assert (run_dir / provenance.FINGERPRINTS).is_file() == (name == "on")
        assert (run_dir / provenance.MANIFEST).is_file() == (name == "on")
