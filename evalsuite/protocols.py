"""What a plugin of each kind must be: the contract `registry.get(kind, name)` hands back.

| kind      | entry-point group    | object                                   | used by                              |
|-----------|----------------------|------------------------------------------|--------------------------------------|
| tasks     | `evalsuite.tasks`    | `TaskFactory` -> `evalsuite.task.Task`   | `runner.build_tasks`                 |
| backends  | `evalsuite.backends` | a class whose instances are `Backend`    | `serving.make_backend`               |
| scorers   | `evalsuite.scorers`  | `Scorer`                                 | `scorers.resolve` (e.g. format_check)|
| judges    | `evalsuite.judges`   | `JudgeFactory` -> `Judge`                | judged tasks' `judge_kind=NAME`      |
| reporters | `evalsuite.reporters`| `Reporter`                               | compare / gate report writers        |

`Backend` lives with the backends (`evalsuite.backends.Backend`). Typing only: importing this
module costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from evalsuite.judges.base import JudgeItem, Judgment
    from evalsuite.records import GenerateRequest, Output, Sample, Score
    from evalsuite.task import Task


class TaskFactory(Protocol):
    """Builds a task from its declared keyword arguments (`-T task.key=value`); a `Task` subclass qualifies.

    `provider:sub` names (`lm_eval:hellaswag`) call the factory with `sub` as the first argument.
    Every keyword the factory declares is a valid task argument; the run-wide sampling flags
    (`--samples-per-task`, `--temperature`, `--seed`) reach only factories that declare
    `samples_per_task`, `temperature` or `seed`.
    """

    def __call__(self, *args: Any, **task_args: Any) -> Task: ...


class Scorer(Protocol):
    """`scorer(sample, text, **options) -> Score`: one value named after the scorer, and why."""

    def __call__(self, sample: Sample, text: str, **options: Any) -> Score: ...


@runtime_checkable
class Judge(Protocol):
    """An LLM-as-judge: items -> judge requests, the judge's outputs -> a `Judgment`.

    `pairwise` judges compare `answer_a` with `answer_b`; the others grade one `answer`.
    """

    pairwise: ClassVar[bool]
    samples: int

    def set_samples(self, samples: int) -> None: ...

    def requests(self, item: JudgeItem) -> list[GenerateRequest]: ...

    def finish(self, item: JudgeItem, outputs: Sequence[Output], header: dict[str, str]) -> Judgment: ...

    def log_header(self, client: Any) -> dict[str, str]: ...

    def describe(self) -> dict[str, Any]: ...


class JudgeFactory(Protocol):
    """A judge class (or factory) taking the judge options every judged task passes."""

    pairwise: ClassVar[bool]

    def __call__(self, *, template: str | None = None, rubric: str | None = None, max_tokens: int = 512,
                 temperature: float | None = None, samples: int = 1, seed: int = 0) -> Judge: ...


class Reporter(Protocol):
    """Writes one report file of a comparison (and the gate's result, when a gate ran) and returns its path."""

    def __call__(self, comparison: Any, out: Path, gate_result: Any | None = None) -> Path: ...
