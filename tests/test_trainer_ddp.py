"""Two-process training (torch.distributed over gloo on CPU, launched by torchrun): the same global batch and data
order as one process, checkpoints and logs written once, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_trainer_run import _write_config

STEPS = {"max_steps": 6, "micro_batch_size": 2, "grad_accum": 2, "lr": 1e-2, "num_threads": 1}
# LoRA dropout draws from each rank's own RNG stream, so it is off here: everything else must match one process
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(config: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_port()), "-m", "evalsuite.cli", "train", str(config)]


def _accelerate(config: Path) -> list[str]:
    """accelerate's own launcher. On a machine without GPUs `--multi_gpu` is the flag that starts N processes (it
    runs torchrun's elastic launch; each process then trains on the CPU over gloo): accelerate 1.16's `--cpu`
    always takes its single-process launcher, whatever `--num_processes` says."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(_port()), "-m", "evalsuite.cli", "train", str(config)]


def _losses(run: Path) -> list[tuple[str, int, float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["step"], r["train_loss"] if r["kind"] == "train" else r["val_loss"]) for r in rows]


def _weights(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(ckpt / "adapter_model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [_torchrun, _accelerate], ids=["torchrun", "accelerate"])
def test_two_processes_train_like_one(tmp_path: Path, tiny_model_dir: Path, launcher) -> None:
    """Catches: each process taking grad_accum micro-batches of its own (a doubled global batch and another data
    order), per-process token counts, and rank 1 writing metrics or checkpoints too; under torchrun and under
    `accelerate launch` alike."""
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    one_dir.mkdir(), two_dir.mkdir()
    one = _write_config(one_dir, tiny_model_dir, training=STEPS, lora=LORA, eval={"every": 3})
    two = _write_config(two_dir, tiny_model_dir, training=STEPS, lora=LORA, eval={"every": 3})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "evalsuite.cli", "train", str(one)], check=True, capture_output=True,
                   timeout=300, env=env)
    proc = subprocess.run(launcher(two), capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("(2 process(es))") == 2, "both ranks ran"
    a, b = one_dir / "runs" / "t", two_dir / "runs" / "t"
    la, lb = _losses(a), _losses(b)
    assert [x[:2] for x in la] == [x[:2] for x in lb], "metrics.jsonl written once, one row per step and checkpoint"
    assert [x[2] for x in lb] == pytest.approx([x[2] for x in la], abs=1e-4)
    tokens = lambda run: [json.loads(x).get("tokens") for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert tokens(a) == tokens(b), "tokens counted over both processes"
    wa, wb = _weights(a / "checkpoints" / "step-6"), _weights(b / "checkpoints" / "step-6")
    assert wa.keys() == wb.keys() and all((wa[k] - wb[k]).abs().max() < 1e-4 for k in wa)
    assert sorted(p.name for p in (b / "checkpoints").iterdir()) == ["step-3", "step-6"]


@pytest.mark.slow
def test_two_processes_resume_after_sigkill(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Killing both ranks after the first checkpoint and running the same command again ends where an
    uninterrupted one-process run ends."""
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    whole_dir.mkdir(), killed_dir.mkdir()
    whole = _write_config(whole_dir, tiny_model_dir, training=STEPS, lora=LORA, eval={"every": 3})
    cfg = _write_config(killed_dir, tiny_model_dir, training=STEPS, lora=LORA, eval={"every": 3})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "evalsuite.cli", "train", str(whole)], check=True, capture_output=True,
                   timeout=300, env=env)
    proc = subprocess.Popen(_torchrun(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    ckpts = killed_dir / "runs" / "t" / "checkpoints"
    deadline = time.time() + 240
    while not (ckpts / "step-3" / "trainer_state.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks
    proc.wait()
    assert not (ckpts / "step-6").exists(), "the run finished before the kill: nothing was resumed"
    started = json.loads((killed_dir / "runs" / "t" / "results.json").read_text())["created"]
    resumed = subprocess.run(_torchrun(cfg), capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr[-3000:]
    wa, wb = _weights(whole_dir / "runs" / "t" / "checkpoints" / "step-6"), _weights(ckpts / "step-6")
    assert all((wa[k] - wb[k]).abs().max() < 1e-4 for k in wa)
    assert json.loads((killed_dir / "runs" / "t" / "results.json").read_text())["created"] == started, \
        "a resumed run keeps the time it was first started"
