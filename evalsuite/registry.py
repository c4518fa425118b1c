"""Plugin registry: decorators plus one entry-point group per plugin kind.

Built-in plugins register through the same `evalsuite.<kind>` entry points a third-party package
declares in its pyproject, so `pip install evalsuite-foo` is all it takes to add one. Plugins are
imported lazily, by name, when first used; one that fails to import raises a clear
`PluginError` naming it and its package (never a silent skip).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from evalsuite.errors import PluginError, UsageError

KINDS = ("tasks", "backends", "scorers", "judges", "reporters")
T = TypeVar("T")

_registered: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    origin: str  # distribution that ships it ("evalsuite", "my-plugin", or "<local>")
    description: str


def _register(kind: str, name: str | None, description: str | None) -> Callable[[T], T]:
    def deco(obj: T) -> T:
        plugin_name = name or getattr(obj, "__name__", None)
        if not plugin_name:
            raise TypeError(f"cannot infer a {kind[:-1]} name for {obj!r}; pass name=")
        obj.__evalsuite_name__ = plugin_name  # type: ignore[attr-defined]
        doc_lines = (obj.__doc__ or "").strip().splitlines()
        obj.__evalsuite_description__ = description or (doc_lines[0] if doc_lines else "")  # type: ignore[attr-defined]
        _registered[kind][plugin_name] = obj
        return obj

    return deco


def task(name: str | None = None, description: str | None = None) -> Callable[[T], T]:
    """Register a task factory: a callable returning a `Task` (kwargs come from `--task-args`)."""
    return _register("tasks", name, description)


def backend(name: str | None = None, description: str | None = None) -> Callable[[T], T]:
    """Register a backend class implementing `evalsuite.backends.Backend`."""
    return _register("backends", name, description)


def scorer(name: str | None = None, description: str | None = None) -> Callable[[T], T]:
    """Register a scorer: a callable (sample, output_text, **kwargs) -> `Score`."""
    return _register("scorers", name, description)


def judge(name: str | None = None, description: str | None = None) -> Callable[[T], T]:
    return _register("judges", name, description)


def reporter(name: str | None = None, description: str | None = None) -> Callable[[T], T]:
    return _register("reporters", name, description)


def _entry_points(kind: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=f"evalsuite.{kind}")}


def _origin(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "<unknown>"


def _load(kind: str, ep: EntryPoint) -> Any:
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported the same way
        raise PluginError(
            f"{kind[:-1]} plugin '{ep.name}' from package '{_origin(ep)}' failed to import "
            f"({ep.value}): {type(exc).__name__}: {exc}"
        ) from exc
    _registered[kind].setdefault(ep.name, obj)
    return obj


def get(kind: str, name: str) -> Any:
    """The plugin object registered as `name`; a `UsageError` with close matches if unknown."""
    if name in _registered[kind]:
        return _registered[kind][name]
    eps = _entry_points(kind)
    if name in eps:
        return _load(kind, eps[name])
    known = sorted(set(eps) | set(_registered[kind]))
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else f" Known: {', '.join(known) or 'none'}."
    raise UsageError(f"unknown {kind[:-1]} '{name}'.{hint} (`evalsuite list` shows all)")


def names(kind: str) -> list[str]:
    return sorted(set(_entry_points(kind)) | set(_registered[kind]))


def describe(kind: str) -> list[PluginInfo]:
    """Every plugin of a kind with its origin and one-line description (imports each plugin)."""
    eps = _entry_points(kind)
    infos = []
    for name in names(kind):
        ep = eps.get(name)
        obj = _registered[kind].get(name) or _load(kind, ep)  # type: ignore[arg-type]
        desc = getattr(obj, "__evalsuite_description__", "") or (obj.__doc__ or "").strip().split("\n")[0]
        infos.append(PluginInfo(kind, name, _origin(ep) if ep is not None else "<local>", desc))
    return infos
