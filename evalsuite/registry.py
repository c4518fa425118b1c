"""Plugin registry: one entry-point group per plugin kind, and nothing else.

A plugin is named exactly once, by an entry point in the `evalsuite.<kind>` group of the package
that ships it; the built-in plugins are declared in evalsuite's own pyproject the same way, so
`pip install evalsuite-foo` is all it takes to add one. Its description is the first line of its
docstring. Plugins are imported lazily, by name, when first used; what each kind must provide is
the Protocol in `evalsuite.protocols`. One that fails to import raises a `PluginError` naming it
and its package when it is used, and is one error row in `evalsuite list` (never a silent skip,
never a blank table); `broken()` lists them for a one-line warning at the start of a run.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from evalsuite.errors import PluginError, UsageError

KINDS = ("tasks", "backends", "scorers", "judges", "reporters")
T = TypeVar("T")

_loaded: dict[tuple[str, str, str], Any] = {}  # (kind, name, entry point value) -> object


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    origin: str  # distribution that ships it ("evalsuite", "my-plugin")
    description: str
    error: str | None = None  # why it failed to import; None when it loads


def _entry_points(kind: str) -> dict[str, EntryPoint]:
    if kind not in KINDS:
        raise UsageError(f"unknown plugin kind '{kind}'; kinds: {', '.join(KINDS)}")
    return {ep.name: ep for ep in entry_points(group=f"evalsuite.{kind}")}


def _origin(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "<unknown>"


def _load(kind: str, ep: EntryPoint) -> Any:
    key = (kind, ep.name, ep.value)
    if key in _loaded:
        return _loaded[key]
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported the same way
        raise PluginError(
            f"{kind[:-1]} plugin '{ep.name}' from package '{_origin(ep)}' failed to import "
            f"({ep.value}): {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(obj):
        raise PluginError(f"{kind[:-1]} plugin '{ep.name}' from package '{_origin(ep)}' ({ep.value}) is not callable: "
                          f"it must be a factory, class or function (see evalsuite.protocols)")
    _loaded[key] = obj
    return obj


def get(kind: str, name: str) -> Any:
    """The plugin registered as `name`; a `UsageError` with close matches if unknown."""
    eps = _entry_points(kind)
    if name in eps:
        return _load(kind, eps[name])
    known = sorted(eps)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else f" Known: {', '.join(known) or 'none'}."
    raise UsageError(f"unknown {kind[:-1]} '{name}'.{hint} (`evalsuite list {kind}` shows all)")


def names(kind: str) -> list[str]:
    return sorted(_entry_points(kind))


def description(obj: Any) -> str:
    """The first line of a plugin's docstring (a class's own, else its factory's)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__  # a class's own, not a base's
    return inspect.cleandoc(doc or "").split("\n")[0]


def describe(kind: str) -> list[PluginInfo]:
    """Every plugin of a kind with its origin and description; a broken one has `error` set instead."""
    infos = []
    for name, ep in sorted(_entry_points(kind).items()):
        try:
            infos.append(PluginInfo(kind, name, _origin(ep), description(_load(kind, ep))))
        except PluginError as exc:
            infos.append(PluginInfo(kind, name, _origin(ep), "", error=str(exc)))
    return infos


def broken(kinds: tuple[str, ...] = KINDS) -> list[PluginInfo]:
    """The installed plugins that fail to import (each imported once; cheap after the first call)."""
    return [info for kind in kinds for info in describe(kind) if info.error]


_reported: set[str] = set()


def newly_broken(kinds: tuple[str, ...] = KINDS) -> list[PluginInfo]:
    """`broken()` less those already returned here: a process that runs many evaluations warns once."""
    new = [b for b in broken(kinds) if b.error not in _reported]
    _reported.update(b.error for b in new if b.error)
    return new
