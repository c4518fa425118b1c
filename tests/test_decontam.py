"""Decontamination finds eval questions planted in training data, and nothing in clean data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalsuite.cli import main
from evalsuite.datagen.decontam import (
    EvalIndex,
    decontaminate,
    drop_contaminated,
    load_eval_index,
    normalize,
    scan,
)
from evalsuite.task import TaskContext
from tests.conftest import write_gsm8k, write_mmlu


def _seed_rows(shared: Path, n: int = 60) -> list[dict]:
    rows = [json.loads(line) for line in (shared / "self_instruct" / "seed_tasks.jsonl").open()][:n]
    return [{"instruction": r["instruction"], "input": r["instances"][0]["input"], "output": r["instances"][0]["output"]}
            for r in rows]


def test_janitor_normalisation() -> None:
    assert normalize("Janet's  Ducks, lay\n16 eggs!") == ["janets", "ducks", "lay", "16", "eggs"]


@pytest.mark.slow
def test_real_gsm8k_and_mmlu_planted_questions_are_found(shared_data: Path) -> None:
    ctx = TaskContext.from_env(shared_data)
    gsm = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").open()]
    from evalsuite.tasks.mmlu import mmlu

    mmlu_samples = {s.id: s for s in mmlu().load(ctx)}
    mmlu_q = mmlu_samples["astronomy/7"].input.split("\n\n")[-1].split("\nA.")[0]  # the bare question text
    clean = _seed_rows(shared_data)
    planted = clean[:10] + [
        {"instruction": "Solve this: " + gsm[42]["question"], "input": "", "output": "42"},  # reworded wrapper
        {"instruction": "Answer step by step.", "input": gsm[100]["question"].upper(), "output": gsm[100]["answer"]},
        {"instruction": mmlu_q, "input": "", "output": "C"},
    ] + clean[10:]

    index = load_eval_index(["gsm8k", "mmlu"], ctx)  # built once, scanned twice
    report = scan(planted, index)
    assert report["contaminated_rows"] == [10, 11, 12]
    gsm_ids = {e["eval_id"] for e in report["tasks"]["gsm8k"]["examples"]}
    assert {"42", "100"} <= gsm_ids
    assert report["tasks"]["gsm8k"]["eval_samples"] == len(gsm) == 1319
    assert "astronomy/7" in {e["eval_id"] for e in report["tasks"]["mmlu"]["examples"]}
    assert report["tasks"]["mmlu"]["contaminated_samples"] >= 1

    clean_report = scan(clean, index)
    assert clean_report["contaminated_rows"] == []
    assert all(t["contaminated_samples"] == 0 for t in clean_report["tasks"].values())
    assert drop_contaminated(planted, report) == clean


def test_fewshot_exemplars_are_not_contamination(tmp_path: Path) -> None:
    """Training on GSM8K *train* (the few-shot exemplars in every prompt) is not a test leak."""
    root = write_mmlu(write_gsm8k(tmp_path / "data"))
    ctx = TaskContext.from_env(root)
    train = [json.loads(line) for line in (root / "gsm8k" / "train.jsonl").open()]
    test = [json.loads(line) for line in (root / "gsm8k" / "test.jsonl").open()]
    rows = [{"instruction": r["question"], "input": "", "output": r["answer"]} for r in train]
    assert decontaminate(rows, ["gsm8k"], ctx)["contaminated_rows"] == []
    # a short test question (10 words < 13) still matches through its 8-grams
    rows.append({"instruction": test[3]["question"], "input": "", "output": ""})
    report = decontaminate(rows, ["gsm8k", "mmlu"], ctx)
    assert report["contaminated_rows"] == [len(rows) - 1]
    assert report["tasks"]["gsm8k"]["contaminated_samples"] == 1
    assert report["tasks"]["mmlu"]["contaminated_samples"] == 0


def test_index_min_words_and_chat_inputs() -> None:
    index = EvalIndex(n=13, min_words=8)
    index.add_task("t", [("a", ["one two three"]), ("b", ["alpha beta gamma delta epsilon zeta eta theta iota"])])
    assert index.matches("say one two three now") == []  # 3 words: too short to call a leak
    assert [m[:2] for m in index.matches("x Alpha, beta gamma delta epsilon zeta eta theta!")] == [("t", "b")]
    assert index.matches("alpha beta gamma delta epsilon zeta eta") == []  # 7 shared words: not enough


def test_cli_drop_and_fail(tmp_path: Path) -> None:
    root = write_gsm8k(tmp_path / "data")
    test = [json.loads(line) for line in (root / "gsm8k" / "test.jsonl").open()]
    src = tmp_path / "train.jsonl"
    rows = [{"instruction": "Name three primary colours and say why they are called primary.", "input": "", "output": "..."},
            {"instruction": test[0]["question"], "input": "", "output": "1"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "clean.jsonl"
    args = ["data", "decontam", str(src), "--tasks", "gsm8k", "--data-dir", str(root), "--drop", "--out", str(out)]
    assert main(args) == 0
    kept = [json.loads(line) for line in out.open()]
    assert [r["instruction"] for r in kept] == [rows[0]["instruction"]]
    assert kept[0]["provenance"]["filters"] == ["decontam:gsm8k"]
    report = json.loads((tmp_path / "clean.jsonl.report.json").read_text())
    assert report["tasks"]["gsm8k"]["contaminated_samples"] == 1
    assert main(args + ["--fail"]) == 1
    assert main(["data", "decontam", str(src), "--tasks", "gsm8k", "--data-dir", str(root), "--drop"]) == 2  # no --out


def test_cli_default_scans_every_task_with_data_and_lists_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No --tasks means `all`: tasks whose data is missing are reported as skipped, not a crash."""
    root = write_mmlu(write_gsm8k(tmp_path / "data"))
    test = [json.loads(line) for line in (root / "gsm8k" / "test.jsonl").open()]
    src = tmp_path / "train.jsonl"
    src.write_text(json.dumps({"instruction": test[0]["question"], "input": "", "output": "1"}) + "\n")
    out = tmp_path / "clean.jsonl"
    assert main(["data", "decontam", str(src), "--data-dir", str(root), "--drop", "--out", str(out)]) == 0
    report = json.loads((tmp_path / "clean.jsonl.report.json").read_text())
    assert {"gsm8k", "mmlu"} <= set(report["tasks"]) and report["contaminated_rows"] == [0]
    assert report["tasks"]["gsm8k"]["contaminated_samples"] == 1
    skipped = report["skipped_tasks"]
    assert {"ifeval", "arc_easy", "hellaswag", "lm_eval"} <= set(skipped) and not set(skipped) & set(report["tasks"])
    assert "missing data" in skipped["ifeval"]
    assert "ifeval: skipped (missing data" in capsys.readouterr().out
    assert out.read_text() == ""

    monkeypatch.delenv("EVALSUITE_DATA_DIR", raising=False)
    assert main(["data", "decontam", str(src)]) == 2  # `all` needs a data dir: clear error, no hub downloads
    assert main(["data", "decontam", str(src), "--tasks", "gsm8k,all", "--data-dir", str(root)]) == 2
