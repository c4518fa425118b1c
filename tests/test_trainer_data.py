"""Training data formats, split, mixture and curriculum; the config's validation messages."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
from evalsuite.trainers import config, data

from evalsuite.errors import DataError, UsageError


def test_three_formats_become_chat_messages() -> None:
    alpaca = {"instruction": "Translate.", "input": "Hallo", "output": "Hello"}
    assert data.to_conversations(alpaca) == [[{"role": "user", "content": "Translate.\n\nHallo"},
                                              {"role": "assistant", "content": "Hello"}]]
    self_instruct = {"instruction": "Add.", "instances": [{"input": "1+1", "output": "2"}, {"input": "", "output": "0"}]}
    convs = data.to_conversations(self_instruct, system_prompt="Be exact.")
    assert len(convs) == 2 and convs[1][1]["content"] == "Add." and convs[0][0] == {"role": "system", "content": "Be exact."}
    share = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hey"},
                               {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye"}]}
    assert [m["role"] for m in data.to_conversations(share)[0]] == ["user", "assistant", "user", "assistant"]
    msgs = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]}
    assert data.to_conversations(msgs)[0] == msgs["messages"]


@pytest.mark.parametrize("record, match", [
    ({"conversations": [{"from": "robot", "value": "x"}]}, "unknown speaker"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "start with a user turn"),
    ({"messages": [{"role": "user", "content": "x"}]}, "assistant reply"),
    ({"text": "plain"}, "cannot tell the format"),
])
def test_bad_records_are_data_errors(record: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        data.to_conversations(record)


def test_split_is_seeded_and_disjoint() -> None:
    items = list(range(100))
    train, val = data.split(items, 0.1, 64, seed=7)
    assert len(val) == 10 and not set(train) & set(val) and sorted(train + val) == items
    assert data.split(items, 0.1, 64, seed=7) == (train, val)
    assert data.split(items, 0.1, 64, seed=8)[1] != val
    assert len(data.split(items, 0.5, 5, seed=7)[1]) == 5  # val_max caps it
    assert data.split([1], 0.5, 5, seed=7) == ([1], [])  # never empties training


def test_mixture_weights_curriculum_and_determinism() -> None:
    pools = [[("a", i) for i in range(10)], [("b", i) for i in range(10)]]
    draws = list(islice(data.stream(pools, [3.0, 1.0], seed=1), 4000))
    share = Counter(k for k, _ in draws)[0] / len(draws)
    assert 0.72 < share < 0.78  # 3:1 mixture
    assert draws == list(islice(data.stream(pools, [3.0, 1.0], seed=1), 4000))  # resume replays the same order
    assert draws != list(islice(data.stream(pools, [3.0, 1.0], seed=2), 4000))
    a_items = [x for k, x in draws if k == 0]
    assert Counter(a_items[:10]) == Counter(pools[0])  # every item once per epoch
    keys = [[float(10 - i) for i in range(10)], None]
    ordered = [x for k, x in islice(data.stream(pools, [1.0, 1.0], seed=1, curriculum="length", keys=keys), 200) if k == 0]
    assert ordered[:10] == list(reversed(pools[0]))  # easy (short) first


def test_files_and_folders_are_read(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps({"instruction": "x", "output": "y"}) + "\n\n")
    (tmp_path / "b.json").write_text(json.dumps([{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "v"}]}]))
    assert len(data.read_records(str(tmp_path))) == 2
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1"):
        data.read_records(str(tmp_path / "bad.jsonl"))
    with pytest.raises(DataError, match="not found"):
        data.read_records(str(tmp_path / "missing.jsonl"))


def test_real_demo_data_loads(shared_data: Path) -> None:
    spec = config.DatasetSpec(path=str(shared_data / "self_instruct" / "user_oriented_instructions.jsonl"))
    convs = data.load_dataset_spec(spec)
    assert len(convs) == 252  # one instance each in this file
    multi = data.load_dataset_spec(config.DatasetSpec(path=str(shared_data / "fastchat_dummy" / "dummy_conversation.json")))
    assert len(multi) == 500 and max(len(c.messages) for c in multi) == 6


def _raw(**over: object) -> dict:
    raw = {"model": "m", "data": {"datasets": [{"path": "d.jsonl"}]}, "training": {"max_steps": 3}}
    raw.update(over)
    return raw


@pytest.mark.parametrize("raw, match", [
    (_raw(trainig={}), "trainig: unknown key"),
    (_raw(training={"max_steps": 3, "learning_rate": 1e-4}), "training.learning_rate: unknown key"),
    (_raw(training={}), "give max_steps or epochs"),
    (_raw(training={"max_steps": 3, "schedule": "exp"}), "training.schedule"),
    (_raw(data={"datasets": [{"path": "a", "hub": "b"}]}), "exactly one of `path` or `hub`"),
    (_raw(lora={"r": 0}), "lora.r"),
    (_raw(eval={"backend": "openai", "asynchronous": "off"}), "child process"),
    (_raw(eval={"backend": "vllm", "asynchronous": "off"}, training={"max_steps": 3, "method": "full"}), "child process"),
    ([1, 2], "expected a mapping"),
])
def test_config_errors_name_the_key(raw: object, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        config.parse(raw)


def test_vllm_scores_lora_checkpoints_in_process() -> None:
    """A LoRA run may score on a warm in-process vLLM engine (asynchronous: off)."""
    cfg = config.parse(_raw(eval={"backend": "vllm", "asynchronous": "off"}))
    assert (cfg.eval.backend, cfg.eval.asynchronous, cfg.training.method) == ("vllm", "off", "lora")


def test_config_paths_are_relative_to_the_file_and_explained(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("model: m\ndata:\n  datasets:\n    - path: sub/d.jsonl\ntraining:\n  max_steps: 2\n")
    cfg = config.load(tmp_path / "c.yaml")
    assert cfg.data.datasets[0].path == str(tmp_path / "sub" / "d.jsonl")
    assert cfg.fingerprint() == config.load(tmp_path / "c.yaml").fingerprint()
    text = config.explain()
    for key in ("training.neftune_alpha", "lora.target_modules", "data.datasets[].weight", "eval.best_metric"):
        assert key in text
    (tmp_path / "bad.yaml").write_text("model: [\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        config.load(tmp_path / "bad.yaml")


def test_hub_datasets_load_through_datasets_from_local_files(tmp_path: Path, monkeypatch) -> None:
    """`hub:` goes through `datasets.load_dataset`; a local data folder exercises it offline."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    folder = tmp_path / "my_hub_set"
    folder.mkdir()
    rows = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]} for i in range(5)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    convs = data.load_dataset_spec(config.DatasetSpec(hub=str(folder), split="train", limit=4))
    assert [c.messages[1]["content"] for c in convs] == ["a0", "a1", "a2", "a3"] and convs[0].source == "my_hub_set"
    with pytest.raises(DataError, match="cannot load hub dataset"):
        data.read_records(hub=str(tmp_path / "nope"), split="train")


def test_curriculum_by_a_difficulty_field(tmp_path: Path) -> None:
    rows = [{"instruction": f"task {d}", "output": "ok", "level": d} for d in (3, 1, 2)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    convs = data.load_dataset_spec(config.DatasetSpec(path=str(tmp_path / "d.jsonl"), difficulty_field="level"))
    keys = [[c.difficulty for c in convs]]
    order = [c.messages[0]["content"] for _, c in islice(data.stream([convs], [1.0], 5, "field", keys), 3)]
    assert order == ["task 1", "task 2", "task 3"]
    with pytest.raises(DataError, match="no difficulty field 'hard'"):
        data.load_dataset_spec(config.DatasetSpec(path=str(tmp_path / "d.jsonl"), difficulty_field="hard"))


def test_device_and_precision_choice_on_this_machine() -> None:
    import torch
    from evalsuite.trainers.device import placement

    cuda = torch.cuda.is_available()
    auto = placement(config.parse(_raw()))
    assert auto.cuda == cuda and auto.bf16 == (cuda and torch.cuda.is_bf16_supported())
    forced = placement(config.parse(_raw(training={"max_steps": 3, "device": "cpu", "precision": "bf16"})))
    assert not forced.cuda and forced.bf16 and forced.label == "cpu / bf16"
    with pytest.raises(UsageError, match="training.device"):
        config.parse(_raw(training={"max_steps": 3, "device": "tpu"}))
    if not cuda:
        with pytest.raises(UsageError, match="no CUDA GPU"):
            placement(config.parse(_raw(training={"max_steps": 3, "device": "cuda"})))


def test_decontamination_drops_eval_twins_and_writes_the_report(tmp_path: Path) -> None:
    from evalsuite.trainers import contamination

    from tests.conftest import write_gsm8k

    data_dir = write_gsm8k(tmp_path / "data", n_test=4)
    conv = lambda q: data.Conversation([{"role": "user", "content": q}, {"role": "assistant", "content": "7"}], "mine")
    leaked = conv("Solve: Tom has 3 apples and buys 4 more. How many? Think step by step.")
    sets = [[conv("Write a haiku about the sea and the wind over it tonight."), leaked], [conv("What is 2 plus 2?")]]
    kept = contamination.clean(sets, ["gsm8k"], str(data_dir), "drop", tmp_path)
    assert kept == [[sets[0][0]], sets[1]]
    report = json.loads((tmp_path / contamination.REPORT).read_text())
    assert report["contaminated_rows"] == [1] and report["tasks"]["gsm8k"]["contaminated_samples"] == 1
    assert [d["contaminated"] for d in report["per_dataset"]] == [1, 0] and report["action"] == "drop"
    assert contamination.clean(sets, ["gsm8k"], str(data_dir), "report", tmp_path) == sets


def test_checkpoint_table_fits_80_columns_with_whole_metric_names() -> None:
    """The quick demo's table showed "ifeva…" for every score column in an 80-column terminal."""
    from rich.console import Console

    from evalsuite.trainers import report

    metrics = ["ifeval/inst_level_loose_acc", "ifeval/inst_level_strict_acc", "ifeval/prompt_level_loose_acc",
               "ifeval/prompt_level_strict_acc", "mmlu/acc", "mmlu/acc_macro"]
    steps = [{"step": s, "train_loss": 2.5, "val_loss": 2.4, "scores": {m: 0.4286 for m in metrics}} for s in (0, 10)]
    from evalsuite import runlog

    results = runlog.RunResults(kind="training", training=runlog.Training(
        steps=steps, best=runlog.Best(step=0, metric=metrics[0])))
    console = Console(width=80, record=True)
    console.print(report.table(results))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "prompt" in text and "strict" in text and "macro" in text and "0.429" in text


def test_report_only_decontamination_keeps_the_fingerprint_of_earlier_runs() -> None:
    """"report" changes no training data: a run started by the previous release must still resume.

    The expected value is what the previous release (8e454a0) computed for this config."""
    raw = {"model": "m", "training": {"max_steps": 3},
           "data": {"datasets": [{"path": "d.jsonl"}], "decontaminate": ["gsm8k"], "decontaminate_action": "report"},
           "eval": {"tasks": ["gsm8k"], "best_metric": "gsm8k/exact_match_strict"}}
    assert config.TrainConfig.model_validate(raw).fingerprint() == "1b80433b8762057d"
