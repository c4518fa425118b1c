"""Write a finished run's results in other tools' formats (`evalsuite run --export lm-eval`).

`lm-eval`: the aggregated-results JSON that `lm_eval --output_path` writes (`results`,
`group_subtasks`, `configs`, `versions`, `n-shot`, `higher_is_better`, `n-samples`, `config`,
`git_hash`, `date`), so dashboards and scripts that read lm-eval files (and lm-eval's own
`make_table`) read evalsuite runs. Metric keys take lm-eval's "metric,filter" form ("acc,none");
per-group numbers (MMLU subjects) become subtasks "<task>_<group>" under their task, as lm-eval
lays out its groups. Tasks run through the lm-eval bridge (`lm_eval:NAME`) export under
lm-eval's own task name with lm-eval's config and higher_is_better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalsuite.errors import UsageError
from evalsuite.runlog import Metric, RunResults

FORMATS = {"lm-eval": "results_lm-eval.json"}


def check_formats(formats: Sequence[str]) -> None:
    """Fail before a run starts when a format is unknown."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown --export format(s) {unknown}; known: {', '.join(sorted(FORMATS))}")


def export_run(run_dir: str | Path, formats: Sequence[str]) -> list[Path]:
    """Write each format's file into the run dir; returns the paths written."""
    check_formats(formats)
    from evalsuite.rundir import load_results, write_json

    run_dir = Path(run_dir)
    results = load_results(run_dir)
    written = []
    for fmt in dict.fromkeys(formats):
        path = run_dir / FORMATS[fmt]
        write_json(path, to_lm_eval(results))
        written.append(path)
    return written


def _metric_entries(metrics: dict[str, Metric]) -> dict[str, Any]:
    """{"acc": Metric} -> {"acc,none": v, "acc_stderr,none": se} (nan stderr -> "N/A")."""
    out: dict[str, Any] = {}
    for key, m in metrics.items():
        name, _, filt = key.partition(",")
        filt = filt or "none"
        se = m.stderr
        out[f"{name},{filt}"] = m.value
        out[f"{name}_stderr,{filt}"] = "N/A" if se is None or math.isnan(se) else se
    return out


def to_lm_eval(results: RunResults) -> dict[str, Any]:
    """evalsuite's run log -> lm-eval's results JSON."""
    out: dict[str, Any] = {key: {} for key in ("results", "group_subtasks", "configs", "versions", "n-shot",
                                               "higher_is_better", "n-samples")}
    for name, t in results.tasks.items():
        bridge = getattr(t, "lm_eval", None) or {}
        task_name = bridge.get("task") or name.split(":", 1)[-1]
        shots = bridge.get("n_shot", t.config.get("num_fewshot", 0))
        hib = bridge.get("higher_is_better") or {k.partition(",")[0]: m.higher_is_better for k, m in t.metrics.items()}
        out["results"][task_name] = {"alias": task_name, **_metric_entries(t.metrics)}
        out["configs"][task_name] = bridge.get("config") or {"task": task_name, **t.config}
        out["versions"][task_name] = t.version
        out["n-shot"][task_name] = shots
        out["higher_is_better"][task_name] = hib
        out["n-samples"][task_name] = {"original": t.n, "effective": t.n}
        subtasks = []
        for group, metrics in t.groups.items():
            sub = group if group.startswith(f"{task_name}_") else f"{task_name}_{group}"  # lm-eval leaves: mmlu_anatomy
            subtasks.append(sub)
            n = max((m.n for m in metrics.values()), default=0)
            out["results"][sub] = {"alias": group, **_metric_entries(metrics)}
            out["versions"][sub], out["n-shot"][sub], out["higher_is_better"][sub] = t.version, shots, hib
            out["n-samples"][sub] = {"original": n, "effective": n}
        out["group_subtasks"][task_name] = subtasks
    model, cfg = results.model, results.config
    out["config"] = {
        "model": model.backend or "evalsuite",
        "model_args": f"model={model.spec or model.name}",
        "model_name": model.name,
        "limit": cfg.get("limit"),
        "random_seed": cfg.get("seed"),
        "use_cache": cfg.get("use_cache"),
    }
    out["git_hash"] = results.environment.git_sha
    out["date"] = results.created
    out["model_name"] = model.name
    out["evalsuite"] = {"status": results.status, "fingerprint": model.fingerprint,
                        "versions": results.environment.versions}
    return out
