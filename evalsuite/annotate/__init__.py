"""Human annotation of run outputs: a local web app (pairwise, Likert, ranking) over a SQLite project.

`evalsuite annotate` serves it (cli.py), store.py keeps the judgments, export.py writes them as a run
dir with the typed `human` section and gives the arena its battles, stats.py measures agreement.
"""

from __future__ import annotations

from typing import Any


def human_battles(store_path: Any) -> list[tuple[str, str, float]]:
    """(model_a, model_b, score of a) per human pairwise or ranking judgment, for `evalsuite arena --human`."""
    from evalsuite.annotate.export import human_battles as battles

    return battles(store_path)
