"""Scorers usable by any task, looked up by name in the `evalsuite.scorers` entry-point group.

A scorer is `scorer(sample, text, **options) -> Score` (`evalsuite.protocols.Scorer`).
`resolve(name, options)` checks the options against the scorer's parameters before anything runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.records import Sample, Score


def resolve(name: str, options: dict[str, Any] | None = None, where: str = "") -> Callable[[Sample, str], Score]:
    """The scorer named `name` with `options` bound; a `UsageError` (prefixed by `where`) for unknown or missing options."""
    from evalsuite import registry

    prefix = f"{where}: " if where else ""
    try:
        scorer = registry.get("scorers", name)
    except UsageError as exc:
        raise UsageError(prefix + str(exc)) from exc
    options = dict(options or {})
    params = list(inspect.signature(scorer).parameters.values())[2:]  # after (sample, text)
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise UsageError(f"{prefix}scorer '{name}' does not take {unknown}; its options: {', '.join(names) or 'none'}")
    missing = [p.name for p in params if p.default is p.empty and p.kind is not p.VAR_KEYWORD and p.name not in options]
    if missing:
        raise UsageError(f"{prefix}scorer '{name}' needs option(s) {missing}; its options: {', '.join(names)}")
    return functools.partial(scorer, **options)
