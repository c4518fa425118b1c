"""The hub loading path (`datasets.load_dataset`) on a local folder laid out like the hub repos."""

from __future__ import annotations

from pathlib import Path

from evalsuite.task import TaskContext
from evalsuite.tasks.gsm8k import GSM8K
from evalsuite.tasks.mmlu import MMLU


def _hub_repo(root: Path, config: str, splits: dict[str, list[dict]]) -> Path:
    """A dataset repo as on the hub: parquet per split under a config folder, configs in README.md."""
    import pandas as pd

    (root / config).mkdir(parents=True)
    lines = ["---", "configs:", f"- config_name: {config}", "  data_files:"]
    for split, rows in splits.items():
        pd.DataFrame(rows).to_parquet(root / config / f"{split}-00000-of-00001.parquet")
        lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (root / "README.md").write_text("\n".join(lines + ["---", ""]))
    return root


def test_gsm8k_from_hub_layout(tmp_path: Path) -> None:
    row = lambda i: {"question": f"q{i}?", "answer": f"r\n#### {i}"}  # noqa: E731
    repo = _hub_repo(tmp_path / "gsm8k", "main", {"train": [row(i) for i in range(5)], "test": [row(9), row(8)]})
    samples = GSM8K(hub_path=str(repo)).load(TaskContext(data_dir=None))
    assert [s.target for s in samples] == ["r\n#### 9", "r\n#### 8"]
    assert samples[0].input.startswith("Question: q0?\nAnswer: r\n#### 0\n\nQuestion: q1?")


def test_mmlu_from_hub_layout(tmp_path: Path) -> None:
    def rows(split: str, n: int) -> list[dict]:
        return [{"question": f"{s} {split} {i}", "subject": s, "choices": ["a", "b", "c", "d"], "answer": i % 4}
                for s in ("anatomy", "virology") for i in range(n)]

    repo = _hub_repo(tmp_path / "mmlu", "all", {"test": rows("test", 2), "dev": rows("dev", 5)})
    samples = MMLU(hub_path=str(repo)).load(TaskContext(data_dir=None))
    assert len(samples) == 4 and {s.metadata["subject"] for s in samples} == {"anatomy", "virology"}
    assert samples[0].input.count("\nAnswer:") == 6  # 5 shots + the question


def test_unreachable_hub_fails_before_the_model_loads(tmp_path: Path) -> None:
    """No data dir, no hub: one line naming the fix, before any model is loaded."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "EVALSUITE_DATA_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", "--model", "a-model-that-would-never-load",
                           "--tasks", "gsm8k", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cannot load dataset 'openai/gsm8k'" in proc.stderr and "--data-dir" in proc.stderr
    assert not list(tmp_path.iterdir()), "no run directory for a run that never started"


def _cached_hub_model(cache: Path, repo_id: str, commit: str) -> None:
    """A model as huggingface_hub caches it: refs/main names the snapshot folder of the commit."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    (root / "snapshots" / commit).mkdir(parents=True)
    (root / "snapshots" / commit / "config.json").write_text("{}")


def test_hub_model_fingerprint_follows_the_cached_commit(tmp_path: Path, monkeypatch) -> None:
    """New weights behind the same hub name must not be served old cached answers."""
    import huggingface_hub.constants as hub_constants

    from evalsuite.backends.models import weights_hash as fingerprint

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name_only = fingerprint("org/model")
    _cached_hub_model(tmp_path, "org/model", "a" * 40)
    first = fingerprint("org/model")
    _cached_hub_model(tmp_path, "org/model", "b" * 40)  # refs/main moves to a new commit
    second = fingerprint("org/model")
    assert len({name_only, first, second}) == 3
    assert fingerprint("org/model") == second
