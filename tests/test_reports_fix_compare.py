"""Compare fixes: task configs and sample contents must match, decontamination reports are shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalsuite.cli import main
from evalsuite.datagen.decontam import summary_lines
from evalsuite.errors import UsageError
from evalsuite.reports.compare import compare, load_runs
from evalsuite.reports.html import render_html
from evalsuite.reports.markdown import render_markdown
from tests.fixtures_runs import SynthTask, binary, write_run

ACC = binary(60, 0.5, seed=7)
REPORT = {"method": "13-gram overlap", "n": 13, "train_rows": 1200, "contaminated_rows": [3, 17, 99],
          "tasks": {"qa": {"contaminated_samples": 3, "eval_samples": 60, "fraction": 0.05}}}


def test_task_config_difference_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """0-shot vs 5-shot on the same samples is not a like-for-like comparison: exit 2 unless allowed."""
    a = write_run(tmp_path / "a", {"qa": SynthTask({"acc": ACC}, config={"num_fewshot": 5})}, model="a")
    b = write_run(tmp_path / "b", {"qa": SynthTask({"acc": ACC}, config={"num_fewshot": 0})}, model="b")
    with pytest.raises(UsageError, match=r"task qa: config differs \(a vs b\): num_fewshot \(5 vs 0\)"):
        compare(load_runs([a, b]))
    assert main(["gate", "--baseline", str(a), "--candidate", str(b)]) == 2
    assert "num_fewshot (5 vs 0)" in capsys.readouterr().err
    assert main(["gate", "--baseline", str(a), "--candidate", str(b), "--allow-mismatch", "--n-boot", "200"]) == 0
    assert "config differs" in capsys.readouterr().out


def test_changed_sample_content_is_refused(tmp_path: Path) -> None:
    """Same ids, different target (the data file changed): refused, naming the samples."""
    targets = [f"answer {i}" for i in range(60)]
    changed = list(targets)
    changed[4] = "answer 4 (fixed)"
    a = write_run(tmp_path / "a", {"qa": SynthTask({"acc": ACC}, targets=targets)}, model="a")
    b = write_run(tmp_path / "b", {"qa": SynthTask({"acc": ACC}, targets=changed)}, model="b")
    with pytest.raises(UsageError, match=r"1 sample\(s\) have the same id but a different input or target in b "
                                         r"\('qa-4'\)"):
        compare(load_runs([a, b]))
    comp = compare(load_runs([a, b]), allow_mismatch=True, n_boot=200)
    assert any("different input or target" in w and "compared anyway" in w for w in comp.warnings)


def test_decontamination_report_is_shown(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write_run(tmp_path / "a", {"qa": SynthTask({"acc": ACC})}, model="base")
    b = write_run(tmp_path / "b", {"qa": SynthTask({"acc": ACC})}, model="sft")
    (b / "decontamination.json").write_text(json.dumps(REPORT))
    expected = summary_lines(REPORT)
    assert main(["compare", str(a), str(b), "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "decontamination of sft's training data:" in out
    assert all(line.strip() in out for line in expected)
    comp = compare(load_runs([a, b]), n_boot=200)
    assert comp.decontamination == {"sft": expected}
    html = render_html(comp)
    assert 'id="decontamination"' in html and "3/60 eval samples (5.0%)" in html
    assert "3/60 eval samples (5.0%)" in render_markdown(comp)


def test_unreadable_decontamination_report_warns(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", {"qa": SynthTask({"acc": ACC})}, model="base")
    b = write_run(tmp_path / "b", {"qa": SynthTask({"acc": ACC})}, model="sft")
    (b / "decontamination.json").write_text('{"train_rows": 3}')
    comp = compare(load_runs([a, b]), n_boot=200)
    assert comp.decontamination == {}
    assert any("is not a readable decontamination report (KeyError" in w for w in comp.warnings)


def test_host_dependent_judge_server_and_unrecorded_config_keys_are_notes(tmp_path: Path) -> None:
    """A baseline from a laptop (or an older evalsuite) against a CI run: comparable, with a note."""
    judge = {"model": "j", "fingerprint": "aaa", "judges": {"Single": {"template": "t", "rubric": None}}}
    base_cfg = {"num_fewshot": 0, "sandbox_workers": 8, "sandbox_timeout_s": 3.0, "judge": judge}
    cand_cfg = {"num_fewshot": 0, "sandbox_workers": 2, "sandbox_timeout_s": 3.4, "sandbox_reference_factor": 4.0,
                "judge": {**judge, "fingerprint": "bbb"}}  # the same judge model behind another port
    a = write_run(tmp_path / "a", {"qa": SynthTask({"acc": ACC}, config=base_cfg)}, model="a")
    b = write_run(tmp_path / "b", {"qa": SynthTask({"acc": ACC}, config=cand_cfg)}, model="b")
    comp = compare(load_runs([a, b]), n_boot=200)
    [note] = comp.warnings
    assert "sandbox_workers (8 vs 2)" in note and "sandbox_reference_factor (absent vs 4.0)" in note
    assert "fingerprint" not in note


def test_a_different_judge_rubric_is_refused_naming_the_nested_key(tmp_path: Path) -> None:
    judge = {"model": "j", "judges": {"Single": {"template": "t", "rubric": "be strict"}}}
    other = {"model": "j", "judges": {"Single": {"template": "t", "rubric": "be kind"}}}
    a = write_run(tmp_path / "a", {"qa": SynthTask({"acc": ACC}, config={"judge": judge})}, model="a")
    b = write_run(tmp_path / "b", {"qa": SynthTask({"acc": ACC}, config={"judge": other})}, model="b")
    with pytest.raises(UsageError, match=r'judge\.judges\.Single\.rubric \("be strict" vs "be kind"\)'):
        compare(load_runs([a, b]))
