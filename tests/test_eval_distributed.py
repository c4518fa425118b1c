"""Data-parallel evaluation under torchrun (two real processes over gloo on CPU): the same run directory
as one process, written once; a rank's failure fails the command with one line; the call cache taking
writes from several processes at once; vLLM's scale-out options reaching its engine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from evalsuite import distributed
from evalsuite.errors import BackendError, UsageError
from tests.judge_server import JudgeServer, judge_server  # noqa: F401 - fixture

RUN = ["--model", "smollm2-135m", "--tasks", "mmlu,gsm8k", "--limit", "4", "-T", "gsm8k.max_tokens=32"]
ENV = {"OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(*target: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_port()), *target]


def _env(shared_data: Path) -> dict[str, str]:
    return {**os.environ, **ENV, "EVALSUITE_DATA_DIR": str(shared_data)}


def _outputs(run: Path) -> list[tuple]:
    """Per sample: task, id, every output without its timing, the answer and the scores."""
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    strip = lambda o: {k: v for k, v in o.items() if k != "latency_s"}  # noqa: E731
    return [(r["task"], r["id"], [strip(o) for o in r["outputs"]], r["answer"], r["scores"], r["error"]) for r in rows]


def _only_run(folder: Path) -> Path:
    runs = list((folder / "runs").iterdir())
    assert len(runs) == 1, f"one run directory, got {runs}"
    return runs[0]


# ---------------------------------------------------------------------------- two processes, real model
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_two_processes_write_the_run_one_process_writes(tmp_path: Path, shared_data: Path, smollm2_dir: Path) -> None:
    """Catches: outputs put back in another order than the requests (a sample scored on another sample's
    answer), a shard computed twice or not at all, rank 1 writing a run directory of its own or printing
    its own progress and table, and results.json not saying the run was two-way."""
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):  # each run its own fresh cache: the comparison never goes through a cache
        folder.mkdir()
    proc = subprocess.run(_torchrun("-m", "evalsuite.cli", "run", *RUN, "--cache-path", str(two / "c.sqlite"),
                                    "--output-dir", str(two / "runs")), capture_output=True, text=True, timeout=700,
                          env=_env(shared_data))
    assert proc.returncode == 0, proc.stderr[-3000:]
    b = _only_run(two)
    log = proc.stderr + proc.stdout
    assert log.count("mmlu (rank 0 of 2: ") == 1 and "rank 1 of 2" not in log, "progress from rank 0 only"
    assert log.count("┃ task") == 1, "one score table"
    assert log.count("Loading weights: 100%") <= 1, "transformers' loading bar from rank 0 only"
    # both ranks computed a share: the 16 MMLU choices (4 contexts) and 4 generations, split in two
    assert "8 of 16 to compute" in log and "2 of 4 to compute" in log
    single = subprocess.run([sys.executable, "-m", "evalsuite.cli", "run", *RUN, "--cache-path", str(one / "c.sqlite"),
                             "--output-dir", str(one / "runs")], capture_output=True, text=True, timeout=700,
                            env=_env(shared_data))
    assert single.returncode == 0, single.stderr[-3000:]
    a = _only_run(one)
    assert _outputs(b) == _outputs(a), "per-sample outputs and scores as one process computes them"
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (a, b))
    assert {t: s["metrics"] for t, s in rb["tasks"].items()} == {t: s["metrics"] for t, s in ra["tasks"].items()}
    assert (ra["config"]["world_size"], rb["config"]["world_size"]) == (1, 2)
    assert rb["status"] == "complete"


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_multi_turn_rounds_are_sharded_and_gathered(tmp_path: Path, shared_data: Path, smollm2_dir: Path,
                                                    judge_server: JudgeServer) -> None:  # noqa: F811
    """MT-Bench (real questions, two turns, seeded sampling for writing) under torchrun equals one process:
    catches a second turn built on another sample's first answer, or on a rank's partial outputs
    (each rank must hold every first-turn answer to make the second turn), and the judge (a real
    OpenAI-protocol server on 127.0.0.1) asked by more than rank 0."""
    judge = "base_url={base_url},max_retries=2,backoff_base=0.01,backoff_max=0.02".format(**judge_server.judge_args())
    args = ["--model", "smollm2-135m", "--tasks", "mt_bench", "--limit", "3", "-T", "mt_bench.max_tokens=8",
            "--judge", "openai:judge", "--judge-args", judge]
    runs = {}
    for name, launch in (("one", [sys.executable, "-m", "evalsuite.cli"]), ("two", _torchrun("-m", "evalsuite.cli"))):
        folder = tmp_path / name
        folder.mkdir()
        proc = subprocess.run([*launch, "run", *args, "--cache-path", str(folder / "c.sqlite"), "--output-dir",
                               str(folder / "runs")], capture_output=True, text=True, timeout=700, env=_env(shared_data))
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = _only_run(folder)
    a, b = _outputs(runs["one"]), _outputs(runs["two"])
    assert [len(x[2]) for x in b] == [2, 2, 2], "both turns of every question"
    assert b == a
    assert judge_server.answered == 2 * 3 * 2, "3 questions x 2 turns judged once per run, by rank 0 alone"
    # the same command again on the same cache: every answer is cached, and rank 1 must still build turn 2
    # from them (catches cached answers read on rank 0 only: rank 1 then drops the samples and the ranks part)
    again = tmp_path / "again"
    proc = subprocess.run([*_torchrun("-m", "evalsuite.cli"), "run", *args, "--cache-path", str(tmp_path / "two" / "c.sqlite"),
                           "--output-dir", str(again / "runs")], capture_output=True, text=True, timeout=700,
                          env=_env(shared_data))
    assert proc.returncode == 0, proc.stderr[-3000:]
    strip_cached = lambda rows: [(*r[:2], [{k: v for k, v in o.items() if k != "extra"} for o in r[2]], *r[3:])  # noqa: E731
                                 for r in rows]
    assert strip_cached(_outputs(_only_run(again))) == strip_cached(a)
    assert judge_server.answered == 2 * 3 * 2, "nothing asked again"


FAULTY = """
import os, sys
from evalsuite.backends.hf import HFBackend
from evalsuite.errors import BackendError

if os.environ["RANK"] == "1" and sys.argv[1] == "generate":  # fault injection: rank 1 fails on its share
    def generate(self, requests, done):
        raise RuntimeError("injected fault: out of memory on rank 1")
    HFBackend.generate = generate
if os.environ["RANK"] == "1" and sys.argv[1] == "load":  # or cannot load the model at all
    def load(self, *args, **kwargs):
        raise BackendError("cannot load model: injected fault on rank 1")
    HFBackend.__init__ = load
del sys.argv[1]

from evalsuite.cli import main
sys.exit(main())
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_rank_failing_fails_the_command_with_one_line(tmp_path: Path, shared_data: Path, smollm2_dir: Path) -> None:
    """Catches: rank 0 going on (or waiting forever) when rank 1's model fails, exit 0, each rank printing
    its own error (or a traceback), and the run directory not saying it failed and why."""
    script = tmp_path / "faulty.py"
    script.write_text(FAULTY)
    proc = subprocess.run(_torchrun(str(script), "generate", "run", "--model", "smollm2-135m", "--tasks", "gsm8k", "--limit", "2",
                                    "-T", "gsm8k.max_tokens=4", "--cache-path", str(tmp_path / "c.sqlite"),
                                    "--output-dir", str(tmp_path / "runs")),
                          capture_output=True, text=True, timeout=600, env=_env(shared_data))
    assert proc.returncode != 0
    lines = [x for x in proc.stderr.splitlines() if x.startswith("evalsuite: ")]
    assert lines == ["evalsuite: error: rank 1: internal error: RuntimeError: injected fault: out of memory on rank 1"]
    assert "injected fault" not in proc.stderr.replace(lines[0], ""), "the error once, no traceback of it"
    run = _only_run(tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "failed" and "rank 1" in results["error"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_rank_that_cannot_load_the_model_stops_every_rank(tmp_path: Path, shared_data: Path,
                                                            smollm2_dir: Path) -> None:
    """Catches rank 0 loading its model and then waiting at the first exchange for a rank 1 that failed
    to load, and the failure not keeping its exit status (2: a backend error) or leaving a run dir.
    (torchrun itself then prints its own summary of the failed worker.)"""
    script = tmp_path / "faulty.py"
    script.write_text(FAULTY)
    proc = subprocess.run(_torchrun(str(script), "load", "run", "--model", "smollm2-135m", "--tasks", "gsm8k",
                                    "--limit", "2", "--cache-path", str(tmp_path / "c.sqlite"), "--output-dir",
                                    str(tmp_path / "runs")), capture_output=True, text=True, timeout=600,
                          env=_env(shared_data))
    assert proc.returncode != 0, proc.stderr[-3000:]  # torchrun exits 1 whatever its worker's status
    assert "failed (exitcode: 2) local_rank: 0" in proc.stderr, "rank 0 exits 2, a backend error's status"
    lines = [x for x in proc.stderr.splitlines() if x.startswith("evalsuite: ")]
    assert lines == ["evalsuite: error: rank 1: cannot load model: injected fault on rank 1"]
    assert not list(tmp_path.glob("runs/*")), "no run happened: no run directory"


@pytest.mark.slow
def test_a_workers_checkpoint_scorer_runs_alone(tmp_path: Path, tiny_model_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches the trainer's child-process scorer, started by rank 0 of a torchrun training, inheriting
    WORLD_SIZE=2 and waiting for a rank 1 that never joins its evaluation (it hung until the 6 h timeout)."""
    import shutil

    from evalsuite.trainers import live_eval
    from tests.conftest import write_mmlu

    data = write_mmlu(tmp_path / "data", n_test=2)
    ckpt = tmp_path / "step-2"
    shutil.copytree(tiny_model_dir, ckpt)
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(_port())}.items():  # as torchrun sets them for rank 0
        monkeypatch.setenv(name, value)
    job = {"tasks": ["mmlu"], "out_dir": str(tmp_path / "evals"), "limit": 2, "data_dir": str(data),
           "task_args": {"num_fewshot": 0}, "model_args": {}, "chat_template": None, "backend": None, "seed": 1}
    proc = live_eval.start_job(ckpt, job)
    try:
        assert proc.wait(timeout=240) == 0, (ckpt / "eval.log").read_text()[-2000:]
    finally:
        proc.kill()
    assert "mmlu/acc" in json.loads((ckpt / "eval.json").read_text())["scores"]


# ---------------------------------------------------------------------------- the shared call cache
WRITER = """
import sys, time
from pathlib import Path
from evalsuite import cache as cache_mod
from evalsuite.cache import CallCache
from evalsuite.records import Output

path, me, start = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
cache_mod.BUSY_TIMEOUT_S = float(sys.argv[4])
while time.time() < start:  # every writer opens the fresh file at the same moment
    time.sleep(0.001)
cache = CallCache(path)
for i in range(150):
    cache.put(f"own-{me}-{i}", Output(texts=[f"{me} {i}"]))
    cache.put(f"shared-{i % 10}", Output(texts=[f"shared {i % 10}"]))  # the same keys from every writer
got = cache.get_many([f"own-{me}-{i}" for i in range(150)])
assert [got[f"own-{me}-{i}"].texts for i in range(150)] == [[f"{me} {i}"] for i in range(150)]
cache.close()
print("ok")
"""


@pytest.mark.parametrize("busy_timeout", [30.0, 0.0], ids=["sqlite-waits", "sqlite-does-not-wait"])
def test_many_processes_write_one_cache_at_once(tmp_path: Path, busy_timeout: float) -> None:
    """Catches: a writer failing with "database is locked" (or going on uncached after its warning) when
    several processes create and write the same cache file at once, as the ranks of a torchrun run do.
    With SQLite's busy timeout at 0 only the cache's own retry carries the writers through: that case
    stands for the locks SQLite reports at once without waiting (creating the file, switching to WAL).
    Also catches two writers opening a new file both adding the `digest` column ("duplicate column
    name", about one run in four before the schema step became one write transaction)."""
    from evalsuite import cache as cache_mod

    path, script = tmp_path / "calls.sqlite", tmp_path / "writer.py"
    script.write_text(WRITER)
    start = time.time() + 3.0
    writers = [subprocess.Popen([sys.executable, str(script), str(path), str(me), str(start), str(busy_timeout)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me in range(8)]
    results = [(w.wait(timeout=300), *w.communicate()) for w in writers]
    assert [(rc, out.strip(), err.strip()) for rc, out, err in results] == [(0, "ok", "")] * 8
    report = cache_mod.check(path)
    assert report.ok and report.entries == 8 * 150 + 10


# ---------------------------------------------------------------------------- fast checks of the pieces
def test_blocks_cover_every_request_once_in_order() -> None:
    """Catches a shard that drops or repeats items, or that is not the rank's own contiguous block."""
    items = list(range(11))
    blocks = [distributed.Ranks(rank=r, world=3).shard(items) for r in range(3)]
    assert blocks == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9, 10]]
    assert distributed.Ranks(rank=1, world=4).shard([1]) == []


def test_launcher_variables() -> None:
    """Catches: a bad WORLD_SIZE or RANK reaching torch as a traceback, and a child process of a
    worker (a trainer's checkpoint scorer) inheriting the variables and waiting to join the workers."""
    assert distributed.world_from_env({}) == (0, 1, 0)
    assert distributed.world_from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}) == (1, 2, 1)
    for bad in ({"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}):
        with pytest.raises(UsageError, match="RANK|WORLD_SIZE"):
            distributed.world_from_env(bad)
    env = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "1", "PATH": "/bin"}
    assert distributed.single_process_env(env) == {"PATH": "/bin"}
    assert distributed.world_from_env(distributed.single_process_env(env)) == (0, 1, 0)


def test_vllm_scale_out_options_reach_the_engine(smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches `tensor_parallel_size` (or an engine key such as `pipeline_parallel_size`) not reaching
    `vllm.LLM`, and `data_parallel_size` > 1 reaching it: vLLM's offline engine refuses that, so the
    backend points to `vllm serve --data-parallel-size N` before anything starts.

    The engine is fault-injected: a stand-in `vllm` module whose `LLM` records its arguments and
    refuses to start, so no engine starts here (that needs a GPU for sizes above 1)."""
    seen: dict = {}

    class LLM:
        def __init__(self, **kwargs: object) -> None:
            seen.update(kwargs)
            raise ValueError("not started in this test")

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, __spec__=None))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())
    from evalsuite.backends.vllm import VLLMBackend

    with pytest.raises(BackendError, match="not started in this test"):
        VLLMBackend(str(smollm2_dir), tensor_parallel_size=2, pipeline_parallel_size=2)
    assert seen["tensor_parallel_size"] == 2 and seen["pipeline_parallel_size"] == 2
    assert seen["model"] == str(smollm2_dir)
    seen.clear()
    with pytest.raises(BackendError, match="vllm serve MODEL --data-parallel-size N"):
        VLLMBackend(str(smollm2_dir), data_parallel_size=2)
    assert not seen, "refused before the engine starts"


def test_one_process_runs_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches a run without torchrun's variables starting a process group (it would wait for peers)."""
    for name in distributed.WORKER_ENV:
        monkeypatch.delenv(name, raising=False)
    ranks = distributed.start()
    assert (ranks.rank, ranks.world, ranks.active, ranks.is_main) == (0, 1, False, True)
    with ranks.together():
        pass
