"""Bad input to `evalsuite run`: one line naming the task/file/flag and the fix, exit 2, before any model loads.

Each row: the command's arguments (DATA is replaced by a data dir holding the damage the row names),
the expected exit code and a phrase the message must contain. The model path does not exist: a
row whose check is missing would fail later with "model path not found" instead of its phrase.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalsuite.cli import main

from .conftest import write_gsm8k, write_mmlu


def _mmlu_row(line: str):
    def damage(root: Path) -> None:
        path = root / "mmlu" / "test" / "anatomy_test.csv"
        lines = path.read_text().splitlines()
        lines[2] = line  # line 3 of the file (the header is line 1)
        path.write_text("\n".join(lines) + "\n")
    return damage


def _gsm8k_line(text: str):
    def damage(root: Path) -> None:
        path = root / "gsm8k" / "test.jsonl"
        lines = path.read_text().splitlines()
        lines[2] = text
        path.write_text("\n".join(lines) + "\n")
    return damage


def _prompts(root: Path) -> None:
    (root / "checks.jsonl").write_text(json.dumps({"prompt": "Say hi", "checks": {"max_length": {"m": 3}}}) + "\n")


CASES = [
    # (id, args, damage, exit code, phrase)
    ("mmlu-temperature", ["--tasks", "mmlu", "--temperature", "0.7"], None, 2,
     "task 'mmlu' does not sample, so --temperature"),
    ("mmlu-samples", ["--tasks", "mmlu", "--samples-per-task", "4"], None, 2,
     "task 'mmlu' does not sample, so --samples-per-task"),
    ("arc-seed", ["--tasks", "arc_easy,mmlu", "--seed", "7"], None, 2, "--seed 7 would change nothing"),
    ("ifeval-samples-beside-humaneval", ["--tasks", "ifeval,gsm8k", "--samples-per-task", "3"], None, 2,
     "task 'ifeval' does not sample"),
    ("samples-zero", ["--tasks", "gsm8k", "--samples-per-task", "0"], None, 2, "--samples-per-task takes a whole number >= 1"),
    ("temperature-negative", ["--tasks", "gsm8k", "--temperature", "-1"], None, 2, "--temperature takes a number >= 0"),
    ("greedy-k-samples", ["--tasks", "gsm8k", "--samples-per-task", "3", "--temperature", "0"], None, 2,
     "3 identical greedy answers"),
    ("task-twice", ["--tasks", "arc_easy,arc_easy"], None, 2, "--tasks names arc_easy more than once"),
    ("bare-task-args-two-tasks", ["--tasks", "mmlu,gsm8k", "--task-args", "num_fewshot=0"], None, 2,
     "write --task-args TASK:num_fewshot=0 or -T TASK.num_fewshot=0"),
    ("unknown-task-arg", ["--tasks", "mmlu", "-T", "mmlu.shots=0"], None, 2,
     "task 'mmlu' does not take 'shots'; valid keys: num_fewshot, subjects, hub_path"),
    ("unknown-task-arg-colon-form", ["--tasks", "mmlu,gsm8k", "--task-args", "gsm8k:fewshot=1"], None, 2,
     "task 'gsm8k' does not take 'fewshot'; valid keys: num_fewshot"),
    ("task-arg-for-absent-task", ["--tasks", "mmlu", "-T", "gsm8k.num_fewshot=1"], None, 2,
     "name task(s) ['gsm8k'] that are not in --tasks mmlu"),
    ("malformed-T", ["--tasks", "mmlu", "-T", "num_fewshot=0"], None, 2, "malformed -T 'num_fewshot=0'"),
    ("mmlu-missing-fields", ["--tasks", "mmlu"], _mmlu_row('"a question?",w,x'), 2,
     "anatomy_test.csv:3: missing field(s) choice2, choice3, answer"),
    ("mmlu-answer-E", ["--tasks", "mmlu"], _mmlu_row('"a question?",w,x,y,z,E'), 2,
     "anatomy_test.csv:3: answer 'E' is not 0-3"),
    ("gsm8k-no-answer", ["--tasks", "gsm8k"], _gsm8k_line(json.dumps({"question": "2+2?"})), 2,
     "test.jsonl:3: row has no 'answer' field"),
    ("gsm8k-bad-json-line-3", ["--tasks", "gsm8k"], _gsm8k_line('{"question": "2+2?", "answer": '), 2,
     "test.jsonl:3: not valid JSON"),
    ("format-check-bad-option", ["--tasks", "format_check", "-T", "format_check.prompts=checks.jsonl"], _prompts, 2,
     "checks.jsonl:1: scorer 'max_length' does not take ['m']; its options: n, unit"),
    ("format-check-unknown-scorer", ["--tasks", "format_check", "-T", "format_check.prompts=x.jsonl",
                                     "-T", "format_check.checks=json_vaild"], None, 2,
     "unknown scorer 'json_vaild'. Did you mean: json_valid"),
]


@pytest.mark.parametrize("args,damage,code,phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(args: list[str], damage, code: int, phrase: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = write_mmlu(write_gsm8k(tmp_path / "data"))
    if damage:
        damage(data)
    try:
        rc = main(["run", "--model", str(tmp_path / "no-such-model"), *args, "--data-dir", str(data),
                   "--output-dir", str(tmp_path / "runs")])
    except SystemExit as exc:  # argparse's own errors (flag types)
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith("usage:") and not x.startswith(" ")]
    assert len(lines) == 1 and phrase in lines[0], err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "bad input leaves no run dir"


COUNT_FLAGS = [  # counts where 0 ran 100 empty rounds, reported a "0-gram overlap", or let no request start
    ["run", "--tasks", "gsm8k", "--max-concurrency"],
    ["data", "self-instruct", "--model", "m", "--out", "o.jsonl", "--batch"],
    ["data", "self-instruct", "--model", "m", "--out", "o.jsonl", "--num-instructions"],
    ["data", "self-instruct", "--model", "m", "--out", "o.jsonl", "--max-rounds"],
    ["data", "decontam", "rows.jsonl", "--n"],
    ["data", "mix", "--out", "o.jsonl", "--total"],
    ["data", "filter", "rows.jsonl", "--out", "o.jsonl", "--max-words"],
    ["annotate", "export", "--bootstrap"],
    ["annotate", "runs/a", "--limit"],
]


@pytest.mark.parametrize("args", COUNT_FLAGS, ids=lambda a: f"{a[0]}-{a[-1].lstrip('-')}")
@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_a_count_below_one_is_one_usage_line(args: list[str], value: str, capsys) -> None:
    """A count flag given 0, a negative or a non-number stops at parse time: exit 2, one line naming the flag.

    Catches a count parsed as a plain int, which let `data decontam --n 0` report "0 contaminated
    (0-gram overlap)" with exit 0, and `data self-instruct --batch 0` spend 100 empty rounds."""
    with pytest.raises(SystemExit) as exc:
        main([*args, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert err[-1].endswith(f"argument {args[-1]}: expected a whole number >= 1, got '{value}'"), err
    assert not any("Traceback" in line for line in err)
