"""`evalsuite train` end to end on a tiny random Llama: checkpoints scored by the runner, resume
after a real SIGKILL, merged export, clear errors; one slow run on the real SmolLM2-135M."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_mmlu

CONVS = [
    {"conversations": [{"from": "human", "value": f"What is {i} plus {i}?"}, {"from": "gpt", "value": f"{2 * i}."},
                       {"from": "human", "value": "Thanks!"}, {"from": "gpt", "value": "You are welcome."}]}
    for i in range(30)
]


def _write_config(tmp: Path, model: Path, **over: dict) -> Path:
    (tmp / "chat.json").write_text(json.dumps(CONVS))
    (tmp / "alpaca.jsonl").write_text("".join(json.dumps({"instruction": f"Repeat {w}", "output": w}) + "\n"
                                              for w in ["apple", "pear", "plum", "fig", "kiwi", "lime"] * 3))
    cfg = {
        "model": str(model), "output_dir": str(tmp / "runs"), "run_name": "t", "seed": 3,
        "data": {"datasets": [{"path": "chat.json"}, {"path": "alpaca.jsonl", "weight": 0.5}],
                 "max_seq_len": 96, "val_fraction": 0.2},
        "training": {"max_steps": 6, "micro_batch_size": 2, "grad_accum": 2, "lr": 1e-2, "num_threads": 1},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
        "eval": {"every": 3},
    }
    for key, value in over.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(config: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "evalsuite.cli", "train", str(config), *extra],
                          capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "COLUMNS": "200"})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_train_scores_checkpoints_with_the_runner_and_exports(tmp_path: Path, tiny_model_dir: Path) -> None:
    data_dir = write_mmlu(tmp_path / "data", n_test=2)
    cfg = _write_config(tmp_path, tiny_model_dir, eval={"every": 3, "tasks": ["mmlu"], "limit": 2, "data_dir": str(data_dir),
                                                        "task_args": {"num_fewshot": 1}, "best_metric": "mmlu/acc"})
    proc = _train(cfg, "--export", "merged")
    run = tmp_path / "runs" / "t"
    results = json.loads((run / "results.json").read_text())
    steps = results["training"]["steps"]
    assert [s["step"] for s in steps] == [3, 6]
    assert all(s["val_loss"] > 0 and "mmlu/acc" in s["scores"] for s in steps)
    assert results["training"]["best"]["metric"] == "mmlu/acc" and results["status"] == "complete"
    assert "mmlu" in results["tasks"]  # the best checkpoint's task section, for every report
    assert f"checkpoints/step-{results['training']['best']['step']}" in proc.stderr.replace("\n", "")
    adapter_cfg = json.loads((run / "checkpoints" / "step-6" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(tiny_model_dir)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert (run / "chat_template.jinja").read_text() and (run / "loss.png").stat().st_size > 1000
    # decontamination ran by itself against eval.tasks; its report sits in every scoring's run dir
    decontam = json.loads((run / "decontamination.json").read_text())
    assert list(decontam["tasks"]) == ["mmlu"] and decontam["action"] == "drop"
    assert all(json.loads((run / d / "decontamination.json").read_text()) == decontam
               for s in steps for d in s["eval_runs"])

    # the in-memory evaluation equals loading the saved checkpoint from disk in a fresh backend.
    # Uncached, and both sides computed: served from the cache, the comparison would compare the
    # cache with itself and miss an in-memory scorer that drifts from HFBackend.
    from evalsuite.rundir import load_run
    from evalsuite.runner import RunConfig, run_eval

    live = load_run(run / steps[-1]["eval_runs"][0])
    fresh = load_run(run_eval(RunConfig(tasks=["mmlu"], model=str(run / "checkpoints" / "step-6"), limit=2,
                                        data_dir=str(data_dir), task_args={"num_fewshot": 1}, output_dir=str(tmp_path / "e"),
                                        model_args={"chat_template": (run / "chat_template.jinja").read_text()},
                                        use_cache=False)))
    assert not any(o.extra.get("cached") for log in (live, fresh) for r in log.records for o in r.outputs)
    assert (live.results.model.engine, fresh.results.model.engine) == ("hf-live", "hf")
    live_lp = [o.logprob for r in live.records for o in r.outputs]
    fresh_lp = [o.logprob for r in fresh.records for o in r.outputs]
    assert len(live_lp) == 8 and live_lp == pytest.approx(fresh_lp, abs=1e-4)
    _check_merged_export(run, tiny_model_dir, results["training"]["best"]["checkpoint"])


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    from safetensors.torch import load_file

    steps = {"max_steps": 12, "micro_batch_size": 2, "grad_accum": 2, "lr": 1e-2, "num_threads": 1}
    (tmp_path / "a").mkdir()
    whole = _write_config(tmp_path / "a", tiny_model_dir, training=steps, eval={"every": 3})
    _train(whole)
    killed_dir = tmp_path / "b"
    killed_dir.mkdir()
    cfg = _write_config(killed_dir, tiny_model_dir, training=steps, eval={"every": 3})
    proc = subprocess.Popen([sys.executable, "-m", "evalsuite.cli", "train", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = killed_dir / "runs" / "t" / "checkpoints"
    deadline = time.time() + 240
    while not (ckpts / "step-3" / "trainer_state.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (ckpts / "step-12").exists(), "the run finished before the kill: nothing was resumed"
    resumed = _train(cfg)
    assert "resuming" in resumed.stderr
    a = load_file(tmp_path / "a" / "runs" / "t" / "checkpoints" / "step-12" / "adapter_model.safetensors")
    b = load_file(ckpts / "step-12" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-5 for k in a)
    loss = lambda d: [(r["step"], round(r["train_loss"], 5)) for r in map(json.loads, (d / "runs" / "t" / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    assert loss(tmp_path / "a") == loss(killed_dir)  # same data order, same optimizer and scheduler state


def _check_merged_export(run: Path, base_dir: Path, best: str) -> None:
    """The merged export computes what base + adapter computes, and carries the chat template."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = run / "export" / "merged"
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    ids = torch.tensor([[1, 20, 300, 4000, 50]])
    with torch.no_grad():
        want = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(run / best)).eval()(ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged).eval()(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base_dir).eval()(ids).logits
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(got, plain, atol=1e-4)
    assert AutoTokenizer.from_pretrained(merged).chat_template == (run / "chat_template.jinja").read_text()


def test_merged_export_takes_the_runs_chat_template(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The export reads <run>/chat_template.jinja for <run>/checkpoints/step-N (it looked one folder up)."""
    import shutil

    from evalsuite.trainers import export
    from transformers import AutoTokenizer

    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step-2"
    shutil.copytree(tiny_model_dir, ckpt)  # a full fine-tuning checkpoint: a standalone model folder
    (run / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    merged = export.merge(ckpt, run / "export")
    assert AutoTokenizer.from_pretrained(merged).chat_template == (run / "chat_template.jinja").read_text()


def _cli(*argv: str) -> int:
    import argparse

    from evalsuite.trainers import cli

    parser = argparse.ArgumentParser()
    cli.configure_train(parser)
    return cli.run_train(parser.parse_args(list(argv)))


def test_usage_errors_come_before_any_model_loads(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    from evalsuite.errors import UsageError

    with pytest.raises(UsageError, match="qlora needs a CUDA GPU"):
        _cli(str(_write_config(tmp_path, tiny_model_dir, training={"method": "qlora"})))
    assert not (tmp_path / "runs").exists()
    from evalsuite.trainers import cli, config

    cli.prepare_run_dir(config.load(_write_config(tmp_path, tiny_model_dir)), fresh=False)
    with pytest.raises(UsageError, match="different config"):
        _cli(str(_write_config(tmp_path, tiny_model_dir, training={"lr": 1e-3})))
    with pytest.raises(UsageError, match="give a training config"):
        _cli()
    gemma = tmp_path / "gemma"  # GGUF export of a non-llama model: refused before training, not after it
    gemma.mkdir()
    (gemma / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    (tmp_path / "g").mkdir()
    with pytest.raises(UsageError, match="llama-architecture models, not 'gemma3_text'"):
        _cli(str(_write_config(tmp_path / "g", gemma)), "--export", "f16")
    assert not (tmp_path / "g" / "runs").exists()
    assert _cli("--explain") == 0 and "training.neftune_alpha" in capsys.readouterr().out


def test_neftune_noise_only_in_training(tiny_model_dir: Path) -> None:
    import torch
    from evalsuite.trainers.recipe import add_neftune
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 2, 3, 4]])
    clean = model.get_input_embeddings()(ids)
    handle = add_neftune(model, 5.0)
    model.train()
    noisy = model.get_input_embeddings()(ids)
    assert not torch.equal(noisy, clean)
    assert (noisy - clean).abs().max() <= 5.0 / (4 * clean.shape[-1]) ** 0.5 + 1e-6
    model.eval()
    assert torch.equal(model.get_input_embeddings()(ids), clean)
    handle.remove()


@pytest.mark.slow
def test_smollm2_lora_learns(tmp_path: Path, smollm2_dir: Path) -> None:
    """The real model: a few LoRA steps on the identity conversations lower validation loss."""
    cfg = _write_config(tmp_path, smollm2_dir, training={"max_steps": 4, "micro_batch_size": 2, "grad_accum": 1,
                                                          "lr": 2e-3, "warmup_ratio": 0.0, "num_threads": 1},
                        lora={"r": 8, "alpha": 16, "dropout": 0.0}, eval={"every": 2})
    _train(cfg)
    results = json.loads((tmp_path / "runs" / "t" / "results.json").read_text())
    val = [s["val_loss"] for s in results["training"]["steps"]]
    assert len(val) == 2 and val[1] < val[0]


@pytest.mark.slow
def test_full_finetuning_linear_warmup_schedule_and_chatml_in_checkpoints(tmp_path: Path, tiny_model_dir: Path) -> None:
    """method: full trains every weight; the lr follows warmup then linear decay; the run's template
    (ChatML here, chosen over the tokenizer's own) is saved with each checkpoint for evaluation."""
    import torch
    from evalsuite.trainers import checkpoint, config, recipe
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalsuite.chat_template import CHATML_TEMPLATE

    path = _write_config(tmp_path, tiny_model_dir, data={"chat_template": "chatml"}, eval={"every": 2},
                         training={"method": "full", "max_steps": 4, "schedule": "linear", "warmup_ratio": 0.5,
                                   "lr": 1e-3, "device": "cpu", "num_threads": 1})
    run = tmp_path / "runs" / "t"
    run.mkdir(parents=True)
    results = recipe.run(config.load(path), run).to_json()
    lrs = [r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    assert lrs == pytest.approx([5e-4, 1e-3, 5e-4, 0.0])
    ckpt = run / "checkpoints" / "step-4"
    assert [s["step"] for s in results["training"]["steps"]] == [2, 4] and not (ckpt / "adapter_config.json").exists()
    assert AutoTokenizer.from_pretrained(ckpt).chat_template == CHATML_TEMPLATE == (run / "chat_template.jinja").read_text()
    trained, base = load_file(ckpt / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert all(not torch.equal(trained[k], base[k]) for k in base if "norm" not in k)  # every matrix moved
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    checkpoint.load_weights(fresh, ckpt, full=True)  # what a resume of a full run loads
    assert all(torch.equal(v, trained[k]) for k, v in fresh.state_dict().items() if k in trained)


@pytest.mark.slow
def test_asynchronous_checkpoint_scoring_in_a_child_process(tmp_path: Path, tiny_model_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU default (eval.asynchronous): a child process loads each saved adapter unmerged and
    scores it while training goes on; its scores land in the same rows as in-process scoring.
    The run dir and EVALSUITE_DATA_DIR are relative: the child runs in the checkpoint folder."""
    from evalsuite.trainers import config, recipe

    write_mmlu(tmp_path / "data", n_test=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALSUITE_DATA_DIR", "data")
    path = _write_config(tmp_path, tiny_model_dir, training={"max_steps": 4, "num_threads": 1},
                         eval={"every": 2, "tasks": ["mmlu"], "limit": 2, "asynchronous": "on",
                               "task_args": {"num_fewshot": 0}, "best_metric": "mmlu/acc"})
    run = Path("runs") / "t"
    run.mkdir(parents=True)
    results = recipe.run(config.load(path), run).to_json()  # the typed log as results.json holds it
    steps = results["training"]["steps"]
    assert [s["step"] for s in steps] == [2, 4] and all("mmlu/acc" in s["scores"] for s in steps), steps
    job = json.loads((run / "checkpoints" / "step-4" / "eval_job.json").read_text())
    assert job["chat_template"] == (run / "chat_template.jinja").read_text()
    assert Path(job["data_dir"]) == (tmp_path / "data").resolve() and Path(job["out_dir"]).is_absolute()
    evaluated = json.loads((run / steps[-1]["eval_runs"][0] / "results.json").read_text())
    assert (run / steps[-1]["eval_runs"][0] / "decontamination.json").is_file()
    assert evaluated["model"]["name"].endswith("step-4") or "step-4" in json.dumps(evaluated["model"])
