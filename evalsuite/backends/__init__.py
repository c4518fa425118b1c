"""The backend protocol: every model server (HF, vLLM, OpenAI-compatible) answers the same two
request kinds with the same semantics, so a task never knows which backend serves it.

Backends call `done(index, output)` as each request finishes, in any order they like (sorted by
length, grouped by shared prefix...): the runner caches each output at once, so a killed run
loses almost nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from evalsuite.records import GenerateRequest, LoglikelihoodRequest, Output

Done = Callable[[int, Output], None]


@runtime_checkable
class Backend(Protocol):
    """What the runner needs from a model backend."""

    model_name: str
    fingerprint: str  # identifies the weights (+ adapter, + chat template) in caches and logs

    def generate(self, requests: Sequence[GenerateRequest], done: Done) -> None: ...

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], done: Done) -> None: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
