"""The cache identity and the rules every backend shares, and bad backend options or model files
failing before anything loads (one line, exit 2)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from evalsuite.backends import Backend, identity, require_backend
from evalsuite.backends.hf import HFBackend
from evalsuite.errors import BackendError, UsageError
from tests.conftest import write_mmlu

BASE = {"engine": "hf", "weights": "w", "dtype": "float32", "quantization": None, "chat_template": "t",
        "add_bos_token": False, "max_length": 2048, "options": {}}


def test_every_input_of_the_fingerprint_changes_it() -> None:
    """Catches a recipe that drops the engine (HF and vLLM then share answers) or any number-changing input."""
    fp = identity.fingerprint(**BASE)
    changes = [("engine", "vllm"), ("engine", "hf-live"), ("engine", "openai"), ("weights", "w2"), ("dtype", "bfloat16"),
               ("quantization", {"load_in_4bit": True}), ("chat_template", "u"), ("add_bos_token", True),
               ("max_length", 1024), ("options", {"kv_cache_dtype": "fp8"})]
    for field, value in changes:
        assert identity.fingerprint(**{**BASE, field: value}) != fp, field
    assert identity.fingerprint(**BASE) == fp  # and it is stable: the same backend hits its own entries
    with pytest.raises(ValueError, match="unknown engine"):
        identity.fingerprint(**{**BASE, "engine": "HF"})


def _cached(log) -> list[bool]:
    return [bool(o.extra.get("cached")) for r in log.records for o in r.outputs]


def test_hf_and_the_in_memory_scorer_share_no_cache_entry(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Through one real cache file: a fresh HF load and `HFBackend.from_loaded` (the trainer's scorer)
    on the same weights each compute their own answers, while a second fresh HF load is served from
    the cache. Catches the in-memory scorer reusing HFBackend's fingerprint (engine `hf`)."""
    from evalsuite.rundir import load_run
    from evalsuite.runner import RunConfig, run_eval

    data = write_mmlu(tmp_path / "data", n_test=1)
    cache = tmp_path / "calls.sqlite"

    def run(name: str, backend) -> object:
        cfg = RunConfig(tasks=["mmlu"], model=str(tiny_model_dir), limit=2, data_dir=str(data), output_dir=str(tmp_path / name),
                        task_args={"num_fewshot": 0}, cache_path=str(cache))
        return load_run(run_eval(cfg, backend=backend))

    hf = HFBackend(str(tiny_model_dir))
    live = HFBackend.from_loaded(hf.model, hf.tokenizer, hf._resolved)  # the very same model object
    first, second = run("hf", hf), run("live", live)
    assert second.results.model.engine == "hf-live" and first.results.model.engine == "hf"
    assert len(_cached(first)) == 8 and not any(_cached(first)) and not any(_cached(second))
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 16  # two sets of entries
    again = run("again", HFBackend(str(tiny_model_dir)))
    assert all(_cached(again))  # the cache itself works: the same engine on the same weights hits
    assert [o.logprob for r in second.records for o in r.outputs] == pytest.approx(
        [o.logprob for r in first.records for o in r.outputs], abs=1e-5)


def test_backends_have_the_protocol(tiny_model_dir: Path) -> None:
    """Catches a backend losing a member the runner reads (it would fail mid-run, not at start)."""
    b = HFBackend(str(tiny_model_dir))
    assert isinstance(b, Backend) and require_backend(b) is b
    assert {"backend", "engine"} <= set(b.info())
    with pytest.raises(TypeError, match="lacks .*fingerprint"):
        require_backend(object())


def test_trainer_scorer_is_an_hf_backend_and_refuses_load_options(tiny_model_dir: Path) -> None:
    """Catches LiveHFBackend drifting from HFBackend (a copy of its __init__), and dtype=... being
    silently ignored (or a TypeError traceback) for a model that is already loaded."""
    from evalsuite.backends import models
    from evalsuite.trainers.live_eval import LiveHFBackend

    hf = HFBackend(str(tiny_model_dir))
    base = models.resolve(str(tiny_model_dir))
    live = LiveHFBackend(hf.model, hf.tokenizer, base, tiny_model_dir, hf.tokenizer.chat_template, False, batch_size=4)
    assert type(live) is HFBackend and live.batch_size == 4 and live.model is hf.model
    assert live.fingerprint != hf.fingerprint and live.info()["engine"] == "hf-live"
    with pytest.raises(UsageError, match=r"eval.model_args \['dtype'\]"):
        LiveHFBackend(hf.model, hf.tokenizer, base, tiny_model_dir, "t", False, dtype="bfloat16")


# ---------------------------------------------------------------- options checked before loading
@pytest.mark.parametrize(("args", "words"), [
    ({"dtype": "nope"}, "dtype='nope'"),
    ({"batch_size": "lots"}, "batch_size='lots'"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"max_length": "long"}, "max_length='long'"),
    ({"device": "gpu"}, "device='gpu'"),
    ({"prefix_sharing": "maybe"}, "prefix_sharing='maybe'"),
    ({"colour": "red"}, "unknown --model-args"),
])
def test_hf_options_fail_before_loading(tiny_model_dir: Path, args: dict, words: str) -> None:
    """Catches an option that fails only after the weights load (or, for batch_size, at the first batch)."""
    with pytest.raises(UsageError, match=words.replace("[", r"\[")):
        HFBackend.check_options(str(tiny_model_dir), **args)
    HFBackend.check_options(str(tiny_model_dir), batch_size=8, dtype="bfloat16")  # good options pass


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is visible here")
def test_cuda_without_a_gpu_fails_before_loading(tiny_model_dir: Path) -> None:
    """Catches device=cuda on a CPU machine failing inside `.to('cuda')` after the load."""
    with pytest.raises(UsageError, match="no CUDA GPU is visible"):
        HFBackend.check_options(str(tiny_model_dir), device="cuda")


def test_vllm_and_openai_options_fail_before_starting() -> None:
    """Catches vLLM options failing a minute into an engine start, and OpenAI ones at the first request."""
    from evalsuite.backends.openai_compat import OpenAIBackend
    from evalsuite.backends.vllm import VLLMBackend

    if __import__("importlib").util.find_spec("vllm") is not None:
        with pytest.raises(UsageError, match="dtype='nope'"):
            VLLMBackend.check_options("smollm2-135m", dtype="nope")
        with pytest.raises(UsageError, match="gpu_memory_utilization=1.5"):
            VLLMBackend.check_options("smollm2-135m", gpu_memory_utilization=1.5)
    with pytest.raises(UsageError, match="endpoint='chats'"):
        OpenAIBackend.check_options("m", base_url="http://127.0.0.1:1/v1", endpoint="chats")
    with pytest.raises(UsageError, match="max_concurrency='many'"):
        OpenAIBackend.check_options("m", base_url="http://127.0.0.1:1/v1", max_concurrency="many")
    with pytest.raises(UsageError, match="--base-url"):
        OpenAIBackend.check_options("m", base_url="127.0.0.1:8000")


def test_cli_bad_model_args_exit_2_without_loading(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Catches `--model-args dtype=nope` ending in a traceback after the weights load."""
    data = write_mmlu(tmp_path / "data", n_test=1)
    proc = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--model", str(tiny_model_dir), "--tasks", "mmlu",
                           "--limit", "1", "--data-dir", str(data), "--output-dir", str(tmp_path / "runs"),
                           "--model-args", "dtype=nope"], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "dtype='nope'" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- GGUF files
def test_garbage_gguf_is_not_a_gguf_file(tmp_path: Path) -> None:
    """Catches a file of random bytes named .gguf reaching transformers' loader."""
    from evalsuite.backends import models

    bad = tmp_path / "model.gguf"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(UsageError, match="not a GGUF file"):
        models.resolve(str(bad))
    with pytest.raises(UsageError, match="not a GGUF file"):
        HFBackend.check_options(str(bad))


def _smollm2_gguf() -> Path:
    from evalsuite.backends import models

    try:
        return models._smollm2_gguf()
    except BackendError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("keep", [2_000_000, -2048])
def test_truncated_gguf_says_truncated_and_exits_2(tmp_path: Path, keep: int) -> None:
    """A copy of the real SmolLM2 GGUF cut in its tensor table, or 2 KB short of its end. Catches the
    ~50 s load ending in "cannot reshape array ..." (a traceback) instead of one line naming the file."""
    src = _smollm2_gguf()
    bad = tmp_path / "cut.gguf"
    with src.open("rb") as fh:
        bad.write_bytes(fh.read(keep if keep > 0 else src.stat().st_size + keep))
    data = write_mmlu(tmp_path / "data", n_test=1)
    proc = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--model", str(bad), "--tasks", "mmlu",
                           "--limit", "1", "--data-dir", str(data), "--output-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "EVALSUITE_MODEL_CACHE": str(tmp_path / "models")})
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("evalsuite: error")]
    assert len(errors) == 1 and "truncated" in errors[0] and str(bad) in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())  # no conversion began
