"""MBPP (Austin et al. 2021): basic Python problems, 3-shot, pass@k from sandboxed execution.

Same prompt as lm-eval's `mbpp` (and the paper): "You are an expert Python programmer, and here
is your task: {text} Your code should pass these tests:\\n\\n{3 asserts}\\n[BEGIN]\\n", with task ids
2, 3, 4 as the three solved examples (code + "\\n[DONE]"), generation stopped at "[DONE]".
Test split: task ids 11-510. Variants (`variant=` task arg): `full` (mbpp.jsonl, 500 problems)
and `sanitized` (sanitized-mbpp.json, 257 test problems; its `test_imports` run before the
asserts). Data: `<data-dir>/mbpp/`. With `chat=True` the prompt goes as one chat turn and the
answer's code block is extracted.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from evalsuite.tasks.code_extract import parse, standalone_program
from evalsuite.tasks.humaneval import CodeTask

from evalsuite.data import read_jsonl
from evalsuite.errors import DataError, UsageError
from evalsuite.records import Sample, chat
from evalsuite.task import TaskContext

SHOT_IDS = (2, 3, 4)
TEST_IDS = range(11, 511)
FILES = {"full": "mbpp.jsonl", "sanitized": "sanitized-mbpp.json"}


def prompt_text(text: str, tests: list[str]) -> str:
    return f"You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n" \
        + "\n".join(tests[:3]) + "\n[BEGIN]\n"


def defined_names(code: str) -> tuple[str, ...]:
    """Top-level functions and classes of the reference code (the tests may call them by any name)."""
    tree = parse(code)
    if tree is None:
        return ()
    return tuple(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))


@dataclass
class MBPP(CodeTask):
    """MBPP: basic Python problems (full 500 / sanitized 257 test split), 3-shot, pass@k in the sandbox."""

    variant: str = "full"
    chat: bool = False
    num_fewshot: int = 3
    name: ClassVar[str] = "mbpp"
    version: ClassVar[str] = "1"

    def __post_init__(self) -> None:
        if self.variant not in FILES:
            raise UsageError(f"mbpp: variant must be one of {sorted(FILES)}, got {self.variant!r}")
        super().__post_init__()

    def _rows(self, ctx: TaskContext) -> list[dict[str, Any]]:
        path = ctx.data_path("mbpp", FILES[self.variant], hub_hint="google-research-datasets/mbpp")
        if self.variant == "full":
            return read_jsonl(path)
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        return [{**r, "text": r["prompt"]} for r in rows]

    def load(self, ctx: TaskContext) -> list[Sample]:
        rows = self._rows(ctx)
        by_id = {r["task_id"]: r for r in rows}
        shots = [by_id[i] for i in SHOT_IDS[: self.num_fewshot] if i in by_id]
        prefix = "".join(prompt_text(s["text"], s["test_list"]) + s["code"] + "\n[DONE]" + "\n\n" for s in shots)
        samples = []
        for r in rows:
            if r["task_id"] not in TEST_IDS:
                continue
            text = prefix + prompt_text(r["text"], r["test_list"])
            setup = "\n".join(list(r.get("test_imports", [])) + [r.get("test_setup_code", "")])
            samples.append(Sample(
                id=str(r["task_id"]), input=chat(text) if self.chat else text, target=r["code"],
                metadata={"setup": setup, "tests": "\n".join(r["test_list"]), "names": list(defined_names(r["code"]))}))
        return samples

    def stop(self) -> tuple[str, ...]:
        return () if self.chat else ("[DONE]",)

    def program(self, sample: Sample, completion: str) -> tuple[str, str, str | None, tuple[str, ...]]:
        names = tuple(sample.metadata.get("names", ()))
        program = standalone_program(completion, names[0] if names else None)
        # the setup (imports, fixtures built from the program's classes) runs with the program, unguarded
        return program + "\n" + sample.metadata["setup"], sample.metadata["tests"], None, names


mbpp = MBPP
