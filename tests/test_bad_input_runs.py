"""Bad input and faults around run directories, data mixtures and training data: one line, exit 2, nothing lost.

Each row is a command, the exit code it must give and a phrase its one-line message must contain.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from evalsuite.cli import main
from tests.conftest import write_gsm8k


def _outputs(tmp: Path, n: int = 6) -> Path:
    path = tmp / "outs.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "output": "#### 1"}) + "\n" for i in range(n)))
    return path


def _train_config(tmp: Path, data_path: str) -> Path:
    """A config whose only problem is its data file (each row writes its own config file)."""
    cfg = {"model": "smollm2-135m", "output_dir": str(tmp / "runs"), "run_name": "t",
           "data": {"datasets": [{"path": data_path}]}, "training": {"max_steps": 1}}
    path = tmp / f"train-{Path(data_path).stem}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rows(tmp: Path) -> list[tuple[list[str], int, str]]:
    data = write_gsm8k(tmp / "data")
    (tmp / "mix.jsonl").write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    (tmp / "broken.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n')
    outs = _outputs(tmp)
    return [
        (["data", "mix", "--source", f"a={tmp / 'mix.jsonl'}:abc", "--total", "2", "--out", str(tmp / "m.jsonl")], 2,
         "the weight 'abc' is not a number"),
        (["train", str(_train_config(tmp, str(tmp / "absent.jsonl")))], 2, "training data not found"),
        (["train", str(_train_config(tmp, str(tmp / "broken.jsonl")))], 2, "broken.jsonl:2 is not valid JSON"),
        (["compare", str(tmp), str(tmp), "--n-boot", "0"], 2, "--n-boot: expected a whole number >= 1, got '0'"),
        (["run", "--model", str(tmp / "no-model"), "--tasks", "xstest", "-T", "xstest.classifier=judge",
          "--output-dir", str(tmp / "r")], 2, "task(s) xstest need a judge model: pass --judge MODEL"),
        (["score", "--tasks", "gsm8k", "--data-dir", str(data), "--outputs", str(outs), "--output-dir", str(tmp / "r"),
          "--limit", "2", "--run-dir", str(tmp)], 2, "exactly one of --outputs"),
    ]


def test_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Catches: a weight typo read as part of a file name ("input file not found: file:abc"), training data that
    is checked only after the model loaded (and left a run dir behind that then needed --fresh)."""
    for argv, code, phrase in _rows(tmp_path):
        try:
            got = main(argv)
        except SystemExit as exc:  # argparse's own errors: usage line + one error line
            got = exc.code
        assert got == code, argv
        err = capsys.readouterr().err
        assert phrase in err, (argv, err)
        lines = [x for x in err.strip().splitlines() if not x.startswith(("usage:", " "))]
        assert "Traceback" not in err and len(lines) == 1, err
    assert not (tmp_path / "runs" / "t").exists(), "bad training data leaves no run directory"


def test_disk_full_marks_the_run_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    """A write that fails (ENOSPC, by fault injection) names the file, keeps results.json, marks it `failed`
    (not `running`) and exits 2 saying a re-run costs no model time. Catches: an internal error and a run dir
    that claims to be running forever."""
    from evalsuite import rundir

    data = write_gsm8k(tmp_path / "data")
    real = rundir.write_samples

    def full(path: Path, records: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(rundir, "write_samples", full)
    code = main(["score", "--tasks", "gsm8k", "--data-dir", str(data), "--outputs", str(_outputs(tmp_path)),
                 "--output-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "samples.jsonl: No space left on device" in err and "costs no model time" in err, err
    (run,) = (tmp_path / "r").iterdir()
    results = rundir.load_results(run)
    assert results.status == "failed" and "No space left" in (results.error or "")
    monkeypatch.setattr(rundir, "write_samples", real)


def test_run_files_respect_the_umask(tmp_path: Path) -> None:
    """Run files get 0666 & ~umask (0644 under umask 022), not mkstemp's 0600, so CI artifact uploaders and other
    users can read them. Catches: the chmod in `atomic_write_text` removed."""
    from evalsuite import rundir

    old = os.umask(0o022)
    try:
        rundir.atomic_write_text(tmp_path / "x.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("offline", ["env", "lookup"])
def test_offline_hub_is_one_line_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture, offline: str) -> None:
    """A hub dataset (no --data-dir) or a hub model id while the hub cannot be reached: one line naming the local
    alternative, before any download is tried. Catches: 30-84 s of retries and 11-22 lines of HTTP noise."""
    from evalsuite import hub

    hub.unreachable_reason.cache_clear()
    monkeypatch.delenv("EVALSUITE_DATA_DIR", raising=False)
    if offline == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:  # fault injection: the host name does not resolve
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(hub, "_resolves", lambda host: False)
    reason = "HF_HUB_OFFLINE is set" if offline == "env" else "the hub (huggingface.co) cannot be reached from here"
    try:
        assert main(["run", "--model", "smollm2-135m", "--tasks", "gsm8k", "--output-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"cannot load dataset 'openai/gsm8k': {reason}" in err, err
        assert "cannot load dataset 'openai/gsm8k'" in err and "--data-dir" in err and len(err.strip().splitlines()) == 1
        data = write_gsm8k(tmp_path / "data")
        assert main(["run", "--model", "nobody/no-such-model", "--tasks", "gsm8k", "--data-dir", str(data),
                     "--output-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "model 'nobody/no-such-model' is neither a local path nor in the hub cache" in err and reason in err, err
        assert len(err.strip().splitlines()) == 1
    finally:
        hub.unreachable_reason.cache_clear()
