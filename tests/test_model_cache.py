"""The converted-model cache under concurrency: processes that start on a fresh cache at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONVERT = "from evalsuite.backends import models; print(models.resolve('smollm2-135m').path)"


@pytest.mark.slow
def test_two_processes_on_a_fresh_cache_convert_once(smollm2_dir: Path, tmp_path: Path) -> None:
    """Two processes resolve the embedded model on an empty model cache at the same moment (as two
    torchrun ranks or two test workers do on a new machine): one converts, the other waits for it
    and loads the same folder; no temporary folder is left behind.

    Catches the unlocked conversion: both converted (two "converting" lines, twice the memory),
    and the second could fail renaming onto the folder the first had just put there."""
    env = {**os.environ, "EVALSUITE_MODEL_CACHE": str(tmp_path / "models"), "COLUMNS": "200"}
    procs = [subprocess.Popen([sys.executable, "-c", CONVERT], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1 and (Path(next(iter(paths))) / "config.json").is_file(), paths
    assert sum(err.count("converting ") for _, err in outs) == 1, [err for _, err in outs]
    left = sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock"))
    assert left == [Path(next(iter(paths))).name], left  # no half-written temporary folder
