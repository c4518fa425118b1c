"""Data-parallel evaluation: `torchrun --nproc_per_node N -m evalsuite.cli run ...` (or `accelerate launch`).

Every rank loads the tasks, the samples and its own backend; each task's model requests are split
across the ranks and the answers gathered, so every rank holds every output and multi-turn tasks
(MT-Bench) go on round by round in step. Only rank 0 scores, writes the run directory and prints;
the other ranks write nothing and exit 0.

- Which requests a rank computes: rank 0 reads the call cache once per round and sends every rank
  the deduplicated misses; each rank takes one contiguous block of them per request kind.
  Contiguous blocks keep the requests that share a few-shot prefix (one MMLU subject) on one rank,
  where the HF backend computes that prefix once. Cache keys never hold the rank or the world size.
- Failures: a failure on any rank (bad input, a model that will not load, a request that raises)
  is carried to every rank at the next exchange; rank 0 reports it as one line naming the rank and
  exits non-zero, the others exit 0 without a word, so a log holds the error once.
- The exchanges run over a gloo group of their own (CPU tensors), also beside an NCCL group that
  a caller set up, with a long timeout: rank 0 scoring a task (a judge, a code sandbox) keeps the
  others waiting at the next task's first exchange.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from evalsuite.errors import EvalsuiteError, UsageError
from evalsuite.records import Output, Request, request_key

# the variables launchers set for a worker; a child process a worker starts is no worker itself
WORKER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
              "ROLE_RANK", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
TIMEOUT = datetime.timedelta(hours=6)  # one rank waiting for rank 0's scoring of a task
KINDS = ("loglikelihood", "generate")

Answer = Callable[[list[Request], str], list[Output]]


class RankFailed(EvalsuiteError):
    """Another rank failed: its message, with the exit status its error carries."""

    def __init__(self, rank: int, message: str, exit_code: int) -> None:
        super().__init__(f"rank {rank}: {message}")
        self.rank, self.exit_code = rank, exit_code


class RankLost(EvalsuiteError):
    """A rank stopped without reporting (killed, out of memory): the exchange with it broke."""

    exit_code = 1


class Follower(SystemExit):
    """Raised on ranks other than 0 when a rank failed: rank 0 says why, so these exit 0 without a word
    (a SystemExit, which the CLI does not turn into an error line)."""

    def __init__(self, why: str) -> None:
        super().__init__(0)
        self.why = why


def world_from_env(env: dict[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's variables; (0, 1, 0) when there are none."""
    env = dict(os.environ if env is None else env)

    def number(name: str, default: int) -> int:
        text = env.get(name, "").strip()
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"environment variable {name}={text!r} is not a whole number: unset it, "
                             "or start evalsuite with torchrun / accelerate launch") from None

    world = number("WORLD_SIZE", 1)
    rank, local = number("RANK", 0), number("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK={rank} and WORLD_SIZE={world} do not fit (need 0 <= RANK < WORLD_SIZE): unset them, "
                         "or start evalsuite with torchrun / accelerate launch")
    return rank, world, local


def single_process_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment without the launcher's worker variables, for child processes
    (a trainer's checkpoint scorer) that must run on their own, not join the workers' group."""
    return {k: v for k, v in (os.environ if env is None else env).items() if k not in WORKER_ENV}


@dataclass(frozen=True)
class Ranks:
    """This process's place among the workers; `Ranks()` is one process, where every step is a no-op."""

    rank: int = 0
    world: int = 1
    group: Any = None  # the gloo process group of the exchanges

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------ collectives
    def _all(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        got: list[Any] = [None] * self.world
        with self._peers_alive():
            dist.all_gather_object(got, obj, group=self.group)
        return got

    def _from_main(self, obj: Any) -> Any:
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        with self._peers_alive():
            dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    @contextmanager
    def _peers_alive(self) -> Iterator[None]:
        """A rank that died without a word (killed, out of memory, a failure on rank 0 while scoring)
        breaks the exchange: rank 0 says so in one line, the others stop quietly."""
        try:
            yield
        except RuntimeError as exc:
            if not self.is_main:
                raise Follower(str(exc)) from exc
            raise RankLost(f"another rank stopped during an exchange (killed or out of memory? its own log "
                                 f"says why): {(str(exc).splitlines() or [type(exc).__name__])[0]}") from exc

    def _raise_first(self, statuses: Sequence[tuple[str, int] | None], own: BaseException | None) -> None:
        """Stop every rank when one failed: rank 0 raises (its own error first), the others `Follower`."""
        failed = [(r, s) for r, s in enumerate(statuses) if s is not None]
        if not failed:
            return
        if not self.is_main:
            raise Follower(failed[0][1][0]) from own
        if own is not None:
            raise own
        rank, (message, code) = failed[0]
        raise RankFailed(rank, message, code)

    @contextmanager
    def together(self) -> Iterator[None]:
        """Run a step on every rank and go on only if it worked on all of them."""
        if not self.active:
            yield
            return
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - carried to the other ranks, then raised here again
            self._raise_first(self._all(_status(exc)), exc)
            raise
        self._raise_first(self._all(None), None)

    # ------------------------------------------------------------ sharded serving
    def shard(self, items: Sequence[Any]) -> list[Any]:
        """This rank's contiguous block of `items` (blocks differ in length by one at most)."""
        n = len(items)
        return list(items[self.rank * n // self.world : (self.rank + 1) * n // self.world])

    def serve(self, requests: list[Request], fingerprint: str, cache: Any, answer: Answer, label: str) -> list[Output]:
        """Answer `requests` on all ranks together: rank 0 reads the cache, every rank computes its
        block of the misses with `answer` (the runner's cache-backed `serve`), every rank gets all."""
        keys = [request_key(r, fingerprint) for r in requests]
        by_key = dict(zip(keys, requests))
        unique = list(by_key)
        hits: dict[str, Output] = {}
        if self.is_main:
            hits = cache.get_many(unique)
            for out in hits.values():
                out.extra["cached"] = True
        # the cached answers go to every rank too: the next round of a multi-turn task is built from them
        todo, hits = self._from_main(([k for k in unique if k not in hits], hits) if self.is_main else None)
        status, own, computed, mine = None, None, {}, []
        try:  # a rank that built other requests than rank 0 (a bug) fails here and is reported once
            mine = [k for kind in KINDS for k in self.shard([k for k in todo if by_key[k].kind == kind])]
            shown = f"{label} (rank {self.rank} of {self.world}: {len(mine)} of {len(todo)} to compute, {len(hits)} cached)"
            outs = answer([by_key[k] for k in mine], shown)
            computed = dict(zip(mine, outs))
        except Exception as exc:  # noqa: BLE001 - every rank learns of it at the exchange below
            status, own = _status(exc), exc
        gathered = self._all((status, computed))
        self._raise_first([s for s, _ in gathered], own)
        found = dict(hits)
        for _, part in gathered:
            found.update(part)
        lost = Output(error="no rank returned an output for this request")
        return [found.get(k, lost) for k in keys]

    def follow(self, names: Sequence[str], run_task: Callable[[str], Any]) -> None:
        """Ranks other than 0: take part in each task's exchanges, keep nothing, write nothing."""
        for name in names:
            run_task(name)


def _status(exc: BaseException) -> tuple[str, int]:
    """What the other ranks need to know of a failure: one line and the exit status."""
    if isinstance(exc, RankFailed):
        return str(exc).partition(": ")[2], exc.exit_code
    if isinstance(exc, EvalsuiteError):
        return str(exc), exc.exit_code
    return f"internal error: {type(exc).__name__}: {exc}", 1


def start() -> Ranks:
    """Join the launcher's workers when WORLD_SIZE > 1: a gloo group, quiet output on ranks other
    than 0, and, with CUDA, one GPU per local rank (the HF backend's `cuda` is the current device)."""
    rank, world, local = world_from_env()
    if world == 1:
        return Ranks()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=TIMEOUT)
    group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=TIMEOUT)
    if torch.cuda.is_available():
        torch.cuda.set_device(local % torch.cuda.device_count())
    if rank != 0:
        from evalsuite.progress import console

        console.quiet = True  # progress bars, warnings and the score table come from rank 0 only
        os.environ["TQDM_DISABLE"] = "1"  # and the loading bars of datasets and others (tqdm) ...
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        try:  # ... and of transformers, which sets tqdm's `disable` itself
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
        except ImportError:
            pass
    return Ranks(rank=rank, world=world, group=group)
