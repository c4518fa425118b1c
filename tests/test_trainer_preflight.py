"""Checks `evalsuite train` makes before any model loads: best_metric, GGUF architecture, QLoRA's
requirements, and the automatic decontamination against the eval tasks."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from evalsuite.trainers import config, contamination, data
from evalsuite.trainers.device import placement, preflight

from evalsuite.errors import UsageError
from tests.conftest import write_gsm8k


def _raw(data_over: dict | None = None, **over: object) -> dict:
    raw = {"model": "m", "data": {"datasets": [{"path": "d.jsonl"}], **(data_over or {})}, "training": {"max_steps": 3}}
    raw.update(over)
    return raw


@pytest.mark.parametrize("raw, match", [
    (_raw(eval={"tasks": ["ifeval"], "best_metric": "ifeval_acc"}), r"best_metric 'ifeval_acc' must be .*\['ifeval'\]"),
    (_raw(eval={"tasks": ["mmlu"], "best_metric": "ifevl/inst_level_loose_acc"}), "TASK one of eval.tasks"),
    (_raw(eval={"tasks": ["mmlu"], "best_metric": "mmlu/"}), "best_metric 'mmlu/'"),
    (_raw(eval={"best_metric": "val_loss"}, data_over={"val_fraction": 0}), "no validation set"),
    (_raw(eval={"keep_last": 2}, data_over={"val_max": 0}), "no validation set"),
])
def test_a_best_metric_that_can_never_be_scored_is_refused(raw: dict, match: str) -> None:
    """A typo used to leave no best checkpoint: the export was skipped and keep_last kept nothing."""
    with pytest.raises(UsageError, match=match) as err:
        config.parse(raw)
    assert "\n" not in str(err.value) and "(top level)" not in str(err.value)


def test_best_metrics_that_can_be_scored_parse() -> None:
    config.parse(_raw(eval={"tasks": ["mmlu", "lm_eval:hellaswag"], "best_metric": "lm_eval:hellaswag/acc"}))
    config.parse(_raw(eval={"best_metric": "train_loss"}, data_over={"val_fraction": 0}))
    config.parse(_raw(data_over={"val_fraction": 0}))  # the default val_loss with nothing depending on it


def test_preflight_refuses_best_metric_when_cli_export_needs_it(tmp_path: Path) -> None:
    cfg = config.parse(_raw(data_over={"val_fraction": 0}, training={"max_steps": 3, "device": "cpu"}))
    cfg.export.merged = True  # what `--export merged` does after parsing
    with pytest.raises(UsageError, match="no validation set"):
        preflight(cfg)


def _model_folder(tmp_path: Path, model_type: str) -> Path:
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def test_gguf_export_of_a_non_llama_model_fails_before_training(tmp_path: Path) -> None:
    gemma = _model_folder(tmp_path, "gemma3_text")
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    cfg = config.parse(_raw(model=str(gemma), training={"max_steps": 3, "device": "cpu"}, export={"gguf": ["f16"]},
                            data={"datasets": [{"path": str(data)}]}))
    with pytest.raises(UsageError, match="supports llama-architecture models, not 'gemma3_text'") as err:
        preflight(cfg)
    assert "\n" not in str(err.value)
    cfg.export.gguf = []
    preflight(cfg)  # merged-only export of the same model is fine
    llama = _model_folder(tmp_path, "llama")
    preflight(config.parse(_raw(model=str(llama), training={"max_steps": 3, "device": "cpu"}, export={"gguf": ["q4_0"]},
                                data={"datasets": [{"path": str(data)}]})))


def test_qlora_names_what_is_missing_here() -> None:
    import torch

    cfg = config.parse(_raw(training={"max_steps": 3, "method": "qlora"}))
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if torch.cuda.is_available() and has_bnb:
        assert placement(cfg).cuda
        return
    with pytest.raises(UsageError, match="qlora needs") as err:
        placement(cfg)
    assert ("bitsandbytes" in str(err.value)) == (not has_bnb)
    assert ("CUDA GPU" in str(err.value)) == (not torch.cuda.is_available())
    assert "evalsuite[qlora]" in str(err.value) or has_bnb


def test_decontamination_defaults_to_the_eval_tasks_with_an_opt_out() -> None:
    ev = {"tasks": ["gsm8k", "mmlu"]}
    assert config.parse(_raw(eval=ev)).decontamination_tasks() == ["gsm8k", "mmlu"]
    assert config.parse(_raw(eval=ev, data_over={"decontaminate": False})).decontamination_tasks() == []
    assert config.parse(_raw(eval=ev, data_over={"decontaminate": []})).decontamination_tasks() == []
    assert config.parse(_raw(eval=ev, data_over={"decontaminate": ["ifeval"]})).decontamination_tasks() == ["ifeval"]
    assert config.parse(_raw()).decontamination_tasks() == []
    # dropping rows changes the training data: a resume must not mix two decontaminated sets
    a, b = config.parse(_raw(eval=ev)), config.parse(_raw(eval={"tasks": ["gsm8k"]}))
    assert a.fingerprint() != b.fingerprint()
    report_only = {"decontaminate_action": "report"}
    assert (config.parse(_raw(eval=ev, data_over=report_only)).fingerprint()
            == config.parse(_raw(eval={"tasks": ["gsm8k"]}, data_over=report_only)).fingerprint())


def _conv(q: str) -> data.Conversation:
    return data.Conversation([{"role": "user", "content": q}, {"role": "assistant", "content": "7"}], "mine")


def test_automatic_decontamination_skips_a_task_it_cannot_load_and_attaches_the_report(tmp_path: Path) -> None:
    data_dir = write_gsm8k(tmp_path / "data", n_test=4)
    sets = [[_conv("Solve: Tom has 3 apples and buys 4 more. How many? Think step by step."), _conv("Hi there.")]]
    kept = contamination.clean(sets, ["gsm8k", "no_such_task"], str(data_dir), "drop", tmp_path, strict=False)
    assert kept == [[sets[0][1]]]
    report = json.loads((tmp_path / contamination.REPORT).read_text())
    assert list(report["skipped_tasks"]) == ["no_such_task"] and "unknown task" in report["skipped_tasks"]["no_such_task"]
    with pytest.raises(UsageError, match="data.decontaminate: unknown task 'no_such_task'"):
        contamination.clean(sets, ["no_such_task"], str(data_dir), "drop", tmp_path)
    evals = [tmp_path / "evals" / "a", tmp_path / "evals" / "b"]
    for d in evals:
        d.mkdir(parents=True)
    contamination.attach(tmp_path, evals)
    assert all(json.loads((d / contamination.REPORT).read_text()) == report for d in evals)
