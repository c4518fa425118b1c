"""Third-party plugins: a real `pip install` of a package that adds a task and a backend; one
registration mechanism (entry points) for built-ins and third parties; a broken plugin is one error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalsuite import registry
from evalsuite.errors import UsageError

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "evalsuite-reverse-plugin"
version = "0.0.1"

[tool.setuptools]
py-modules = ["evalsuite_reverse", "evalsuite_reverse_broken"]

[project.entry-points."evalsuite.tasks"]
reverse = "evalsuite_reverse:reverse"
broken = "evalsuite_reverse_broken:task"

[project.entry-points."evalsuite.backends"]
reverser = "evalsuite_reverse:ReverserBackend"
"""

PLUGIN_CODE = '''
"""A task that asks a model to reverse words, and a backend that reverses its prompt."""
from evalsuite.records import GenerateRequest, Output, Sample, Score
from evalsuite.task import Task

WORDS = ["evalsuite", "plugin", "level", "python"]

class Reverse(Task):
    """Reverse a word (a third-party task)."""
    name = "reverse"
    def load(self, ctx):
        return [Sample(id=w, input=w, target=w[::-1]) for w in WORDS]
    def requests(self, sample):
        return [GenerateRequest(sample.input, max_tokens=16)]
    def score(self, sample, outputs):
        return Score({"exact": float(outputs[0].text == sample.target)}, answer=outputs[0].text)

def reverse():
    """Reverse a word (a third-party task)."""
    return Reverse()

class ReverserBackend:
    """Answers every prompt with the prompt reversed."""
    def __init__(self, model, flip_last=False):
        self.model_name, self.fingerprint, self.flip_last = model, "reverser-" + model, flip_last
    def generate(self, requests, done):
        for i, r in enumerate(requests):
            text = r.prompt[::-1]
            done(i, Output(texts=[text + "!" if self.flip_last and i == len(requests) - 1 else text]))
    def loglikelihood(self, requests, done):
        raise NotImplementedError
    def info(self):
        return {"backend": "reverser"}
    def close(self):
        pass
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (src / "evalsuite_reverse.py").write_text(PLUGIN_CODE)
    (src / "evalsuite_reverse_broken.py").write_text("import a_module_that_does_not_exist\n")
    site = tmp_path_factory.mktemp("plugin-site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return site


def _cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250", "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "evalsuite.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_installed_plugin_runs_its_task_on_its_backend(plugin_site: Path, tmp_path: Path) -> None:
    proc = _cli(plugin_site, "run", "--model", "m", "--backend", "reverser", "--tasks", "reverse",
                "--model-args", "flip_last=true", "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = tmp_path.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tasks"]["reverse"]["metrics"]["exact"]["value"] == pytest.approx(3 / 4)


def test_list_names_plugin_origin_and_broken_plugin_is_one_error_row(plugin_site: Path) -> None:
    proc = _cli(plugin_site, "list", "backends")
    assert proc.returncode == 0, proc.stderr
    assert "reverser" in proc.stdout and "evalsuite-reverse-plugin" in proc.stdout
    assert "Answers every prompt with the prompt reversed" in proc.stdout  # the docstring is the description
    proc = _cli(plugin_site, "list", "tasks")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # the broken plugin is one row; every other task is still listed
    assert "broken" in proc.stdout and "reverse" in proc.stdout and "gsm8k" in proc.stdout and "mmlu" in proc.stdout
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "task plugin 'broken' from package 'evalsuite-reverse-plugin' failed to import" in line
    assert "a_module_that_does_not_exist" in line


def test_run_of_another_task_warns_once_about_a_broken_plugin(plugin_site: Path, tmp_path: Path) -> None:
    proc = _cli(plugin_site, "run", "--model", "m", "--backend", "reverser", "--tasks", "reverse",
                "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    warnings = [x for x in proc.stderr.splitlines() if "fail to import" in x]
    assert len(warnings) == 1 and "task 'broken' from 'evalsuite-reverse-plugin'" in warnings[0]


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(UsageError, match="Did you mean: mmlu"):
        registry.get("tasks", "mmmlu")


def test_every_plugin_is_named_once_by_an_entry_point() -> None:
    """No second registry: the decorators are gone, and every group `list` shows resolves by name."""
    for gone in ("task", "scorer", "judge"):
        assert not hasattr(registry, gone)
    for kind in registry.KINDS:
        infos = registry.describe(kind)
        assert infos and all(i.error is None and i.origin == "evalsuite" for i in infos), kind
        assert all(i.description for i in infos if kind != "backends"), kind  # docstrings describe them
        for info in infos:
            assert callable(registry.get(kind, info.name))


def test_a_plugin_in_a_dist_info_resolves_and_a_non_callable_one_is_an_error(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from evalsuite.errors import PluginError

    from tests.plugin_dist import install_entry_points

    install_entry_points(tmp_path, monkeypatch, "x-plugins", {"evalsuite.scorers": {
        "shouty": "evalsuite.scorers.format:json_valid", "not_callable": "evalsuite.scorers.format:RELATIONS"}})
    assert registry.get("scorers", "shouty") is registry.get("scorers", "json_valid")
    with pytest.raises(PluginError, match="not_callable.*x-plugins.*not callable"):
        registry.get("scorers", "not_callable")
    assert [b.name for b in registry.broken(("scorers",))] == ["not_callable"]
