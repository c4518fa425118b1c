"""Entry points for plugins defined in a test, the way a package declares them: a `.dist-info` on sys.path.

This is exactly what `pip install` leaves behind (METADATA + entry_points.txt), without building
a wheel, so a test's task or scorer is found by name through the one registration mechanism.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def install_entry_points(root: Path, monkeypatch: pytest.MonkeyPatch, dist: str,
                         groups: dict[str, dict[str, str]]) -> Path:
    """Write `<dist>-0.0.0.dist-info` under `root` declaring `groups` ({group: {name: "module:attr"}}) and put `root` on sys.path."""
    info = root / f"{dist.replace('-', '_')}-0.0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.0\n")
    lines = []
    for group, eps in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(root))
    return root
