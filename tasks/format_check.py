"""Format-following on your own prompts: each answer checked by scorers named in the data or the task arguments.

Prompts come from a JSONL file (`prompts=PATH`, absolute or under the data dir), one object per line:
`{"id": ..., "prompt": "...", "target": ..., "checks": {"json_valid": {"schema": {...}}, "max_length": {"n": 200}}}`
(`id`, `target` and `checks` optional; `checks` may also be a list of names). Lines without
`checks` use the `checks=NAME+NAME` task argument. Every check is an `evalsuite.scorers` plugin
(`evalsuite list scorers`), resolved and its options validated before any model runs. Metrics:
one 0/1 value per check (over the prompts that ask for it) and `all_pass` per prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from evalsuite.data import numbered_jsonl
from evalsuite.errors import DataError, UsageError
from evalsuite.records import GenerateRequest, Output, Request, Sample, Score, chat
from evalsuite.scorers import resolve
from evalsuite.scorers.format import combine
from evalsuite.task import Task, TaskContext


@dataclass
class FormatCheck(Task):
    """Format checks on your own prompts: JSON, regex, counts, Markdown ... by scorer name, per prompt."""

    prompts: str | None = None
    checks: str = ""  # default checks, "json_valid+max_length" ('+' since ',' separates task arguments)
    max_tokens: int = 512
    chat: bool = True  # send the prompt as a chat turn (else as plain text)
    temperature: float = 0.0
    seed: int | None = None
    name: ClassVar[str] = "format_check"
    version: ClassVar[str] = "1"

    def __post_init__(self) -> None:
        if not self.prompts:
            raise UsageError("task 'format_check' needs prompts=FILE.jsonl (-T format_check.prompts=FILE)")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise UsageError(f"format_check: temperature must be a number >= 0, got {self.temperature!r}")
        if self.temperature == 0:
            self.seed = None
        self._default = {n: {} for n in self.checks.split("+") if n.strip()}
        for n in self._default:
            resolve(n, {}, where="format_check checks")

    def _path(self, ctx: TaskContext) -> Path:
        path = Path(str(self.prompts)).expanduser()
        if not path.is_absolute():
            return ctx.data_path(*path.parts)
        if not path.is_file():
            raise DataError(f"format_check: prompts file not found: {path} (-T format_check.prompts=FILE)")
        return path

    def load(self, ctx: TaskContext) -> list[Sample]:
        path = self._path(ctx)
        samples = []
        for i, (line, row) in enumerate(numbered_jsonl(path)):
            where = f"{path}:{line}"
            if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
                raise DataError(f"{where}: needs a 'prompt' text, got keys {sorted(row)}")
            checks = row.get("checks", self._default)
            if isinstance(checks, list):
                checks = {n: {} for n in checks}
            if not isinstance(checks, dict) or not checks:
                raise DataError(f"{where}: no checks: give the line a 'checks' object or pass -T format_check.checks=NAME")
            for n, opts in checks.items():
                if not isinstance(opts, dict):
                    raise DataError(f"{where}: the options of check '{n}' must be an object, got {opts!r}")
                try:
                    resolve(n, opts, where=where)
                except UsageError as exc:
                    raise DataError(str(exc)) from exc
            samples.append(Sample(id=str(row.get("id", i)), input=row["prompt"], target=row.get("target"),
                                  metadata={"checks": checks}))
        return samples

    def requests(self, sample: Sample) -> list[Request]:
        prompt = chat(str(sample.input)) if self.chat else sample.input
        return [GenerateRequest(prompt, max_tokens=self.max_tokens, temperature=float(self.temperature), seed=self.seed)]

    def score(self, sample: Sample, outputs: Sequence[Output]) -> Score:
        text = outputs[0].text if outputs else ""
        scorers: list[Callable[[Sample, str], Score]] = [resolve(n, o) for n, o in sample.metadata["checks"].items()]
        result = combine(*(s(sample, text) for s in scorers))
        result.values["all_pass"] = float(all(v == 1.0 for v in result.values.values()))
        return result


format_check = FormatCheck
