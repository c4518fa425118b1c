"""The backend protocol: every model server (HF, vLLM, OpenAI-compatible) answers the same two
request kinds with the same semantics, so a task never knows which backend serves it.

Backends call `done(index, output)` as each request finishes, in any order they like (sorted by
length, grouped by shared prefix...): the runner caches each output at once, so a killed run
loses almost nothing. A backend class may also define `check_options(model, **model_args)`, a
classmethod that rejects bad options before anything loads (`check_backend_options` calls it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from evalsuite.errors import UsageError
from evalsuite.records import GenerateRequest, LoglikelihoodRequest, Output

Done = Callable[[int, Output], None]


@runtime_checkable
class Backend(Protocol):
    """What the runner needs from a model backend (checked at run time with `require_backend`)."""

    model_name: str  # display name, recorded in results.json
    # the cache identity: `identity.fingerprint(engine=..., weights=..., ...)`; two backends share
    # cache entries only if they compute the same numbers
    fingerprint: str

    def generate(self, requests: Sequence[GenerateRequest], done: Done) -> None: ...

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], done: Done) -> None: ...

    def info(self) -> dict[str, Any]:
        """What the run records about the backend: at least `backend` (its registry name) and `engine`."""
        ...

    def close(self) -> None: ...


def require_backend(obj: Any, what: str = "backend") -> Backend:
    """`obj` if it has the whole Backend interface, else a TypeError naming what is missing."""
    if not isinstance(obj, Backend):
        members = ("model_name", "fingerprint", "generate", "loglikelihood", "info", "close")
        missing = [m for m in members if not hasattr(obj, m)]
        raise TypeError(f"{what} {type(obj).__name__} is not an evalsuite Backend: it lacks {', '.join(missing)}")
    return obj


def check_backend_options(cls: type, model: str, model_args: Mapping[str, Any]) -> None:
    """Run the class's `check_options` (if it has one): bad options fail before a model loads."""
    check = getattr(cls, "check_options", None)
    if callable(check):
        check(model, **dict(model_args))


# ---------------------------------------------------------------- option checks the backends share
def check_int(name: str, value: Any, minimum: int = 1, allow_none: bool = True, auto: bool = False) -> None:
    """`--model-args NAME=value` must be a whole number >= minimum (or None / `auto` where allowed)."""
    if value is None and allow_none or auto and value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        also = " or auto" if auto else ""
        raise UsageError(f"--model-args {name}={value!r}: expected a whole number >= {minimum}{also}")


def check_number(name: str, value: Any, low: float = 0.0, high: float | None = None, allow_none: bool = True) -> None:
    """`--model-args NAME=value` must be a number in (low, high]."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > low and (high is None or value <= high)
    if not ok:
        bound = f"in ({low:g}, {high:g}]" if high is not None else f"> {low:g}"
        raise UsageError(f"--model-args {name}={value!r}: expected a number {bound}")


def check_bool(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none or isinstance(value, bool):
        return
    raise UsageError(f"--model-args {name}={value!r}: expected true or false")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UsageError(f"--model-args {name}={value!r}: expected one of {', '.join(choices)}")
