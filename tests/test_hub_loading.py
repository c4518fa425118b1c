"""The hub loading path (`datasets.load_dataset`) on a local folder laid out like the hub repos."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalsuite.errors import DataError
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


def test_unreachable_hub_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="--data-dir"):
        GSM8K(hub_path="openai/gsm8k-definitely-not-cached").load(TaskContext(data_dir=None))
