"""Run programs in the sandbox and turn what happened into a `Verdict`.

Each worker slot keeps one long-lived sandbox (a `Template`: the isolated process tree of
`layers.detect()`, running `_bootstrap.py`) that forks a fresh child per program, so a program
costs a fork, not a sandbox and interpreter start-up. The template supervises the child (deadline,
rlimits, nonce, cleanup of every process it left); the harness supervises the template (its own
deadline: if the template hangs or is killed, the whole slot sandbox is killed and restarted).
The verdict comes from the nonce report, the wait status and the kill reasons, never from the
program's exit code or output.
"""

from __future__ import annotations

import atexit
import enum
import functools
import json
import math
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalsuite.sandbox import layers

# the template's `python -c` script: the sandbox cannot import evalsuite, so its parts travel as one text
_BOOTSTRAP = "\n".join((Path(__file__).parent / name).read_text(encoding="utf-8")
                       for name in ("_integrity.py", "_confine.py", "_bootstrap.py"))
_SIGNAL_NAMES = {s.value: s.name for s in signal.Signals}
RECYCLE_AFTER = 500  # programs per slot sandbox before a fresh one (bounds what a program can leave in IPC)
SUPERVISOR_SLACK_S = 5.0  # the template enforces the deadline; the harness waits this much longer
DETAIL_CHARS = 2000  # a verdict's failure explanation is cut to this (stdout/stderr: Limits.tail_bytes)


class Status(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"  # an assertion failed, or the program exited before the checks completed
    ERROR = "error"  # an exception in the program or its tests, or a crash
    TIMEOUT = "timeout"  # wall clock or CPU seconds
    MEMORY = "memory"  # address-space limit hit (MemoryError)
    KILLED = "killed"  # output cap, or killed by a signal the harness did not send


@dataclass(frozen=True)
class Limits:
    """Per-program limits; `timeout_s` is wall clock, CPU seconds are capped just above it."""

    timeout_s: float = 3.0
    memory_bytes: int = 1 << 30
    max_processes: int = 16  # processes + threads of the slot uid (enforced when running as root)
    file_bytes: int = 16 << 20  # any file, stdout and stderr included (they are files in the work dir)
    open_files: int = 64
    tail_bytes: int = 4096  # kept of stdout and stderr for the verdict
    grace_s: float = 0.05  # SIGTERM at the deadline, SIGKILL this much later (then every process left)

    def rlimits(self, nproc_base: int | None) -> dict[str, int]:
        """The rlimits; RLIMIT_NPROC counts every process of the uid, so it is `nproc_base` + ours."""
        out = {"RLIMIT_AS": self.memory_bytes, "RLIMIT_CPU": math.ceil(self.timeout_s) + 1,
               "RLIMIT_FSIZE": self.file_bytes, "RLIMIT_NOFILE": self.open_files, "RLIMIT_CORE": 0}
        if nproc_base is not None:
            out["RLIMIT_NPROC"] = nproc_base + self.max_processes
        return out


DEFAULT_LIMITS = Limits()


@dataclass
class Verdict:
    """What happened to one program."""

    status: Status
    detail: str = ""  # the failure explanation, at most DETAIL_CHARS (2,000) characters
    stdout: str = ""  # tails (Limits.tail_bytes)
    stderr: str = ""
    wall_s: float = 0.0
    peak_rss_bytes: int = 0
    exit_code: int | None = None
    layers: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        d["layers"] = list(self.layers)
        return d


class Template:
    """One slot's long-lived sandbox; `run(job)` forks a child in it per program."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.iso = layers.detect()
        self.generation = 0
        self.uid = layers.slot_uid(slot) if self.iso.drop_uid else None
        self.proc: subprocess.Popen | None = None
        self.base: str | None = None
        self.lock = threading.Lock()
        self.runs = 0
        self._buf = b""  # reply bytes read past the last newline
        self.nproc_base = nproc_base(self.iso.drop_uid)

    def start(self) -> None:
        iso = self.iso
        self.uid = layers.slot_uid(self.slot, self.generation) if iso.drop_uid else None
        self.generation += 1
        self.base = None if iso.mode == "bwrap" else _make_workdir(self.uid)
        pid_ns = "1" if iso.mode in ("bwrap", "unshare") else "0"
        argv = [iso.python, "-I", "-S", "-c", _BOOTSTRAP, self.base or "/tmp", pid_ns]
        if iso.mode == "unshare":  # the bootstrap hides the host and makes the root read-only (bwrap does it itself)
            argv += ["ro", *layers.view_args(iso, self.base or "/tmp")]
        # spawned from one long-lived thread: bwrap's --die-with-parent follows the *thread* that
        # forked it, and pool threads come and go
        self.proc = _spawner().submit(
            subprocess.Popen, layers.command(iso, argv, self.uid, self.base), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True).result()
        hello = self._read_line(time.monotonic() + 30)
        if hello is None or not hello.get("ready"):
            err = self._stop()
            raise RuntimeError(f"sandbox template did not start ({iso.mode}): {err[-300:]}")
        self.runs = 0

    def run(self, job: dict[str, Any], limits: Limits) -> Verdict:
        with self.lock:
            for _ in range(2):
                verdict = self._run_once(job, limits)
                if verdict is not None:
                    return verdict
                self._stop()  # the template could not fork (a previous program's leftovers): fresh sandbox, once
            return Verdict(Status.ERROR, "the sandbox could not start the program", layers=self.iso.layers)

    def _run_once(self, job: dict[str, Any], limits: Limits) -> Verdict | None:
        if self.proc is None or self.proc.poll() is not None or self.runs >= RECYCLE_AFTER:
            self._stop()
            self.start()
        assert self.proc and self.proc.stdin
        t0 = time.perf_counter()
        self.runs += 1
        try:
            self.proc.stdin.write(json.dumps(job).encode() + b"\n")
            self.proc.stdin.flush()
            reply = self._read_line(time.monotonic() + limits.timeout_s + SUPERVISOR_SLACK_S)
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None:  # the template died (killed by the program?) or hung: kill the slot sandbox
            alive = self.proc.poll() is None
            self._stop()
            wall = time.perf_counter() - t0
            if alive:
                return Verdict(Status.TIMEOUT, "the slot sandbox stopped answering; it was killed",
                               wall_s=wall, layers=self.iso.layers)
            return Verdict(Status.KILLED, "the sandbox's supervisor was killed (by the program?)",
                           wall_s=wall, layers=self.iso.layers)
        if "error" in reply:
            return None
        if self.iso.mode == "none":  # no PID namespace around: catch daemons that left the session
            _kill_uid(self.uid, self.proc.pid)
        status, detail = _classify(reply, limits)
        return Verdict(status, detail[:DETAIL_CHARS], reply["stdout"], reply["stderr"], reply["wall_s"],
                       reply["rss_kb"] * 1024, _exit_code(reply["status"]),
                       layers.with_rlimits(self.iso.layers, reply.get("rlimits", [])))

    def _read_line(self, deadline: float) -> dict[str, Any] | None:
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        buf = self._buf
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return None
                buf += chunk
        line, _, self._buf = buf.partition(b"\n")
        return json.loads(line)

    def _stop(self, graceful: bool = False) -> str:
        """Stop the slot sandbox without orphans: its init is killed first, so bwrap reaps it and exits."""
        err = ""
        if self.proc is not None:
            if graceful and self.proc.stdin:
                try:
                    self.proc.stdin.close()  # EOF: an idle template exits, and the sandbox with it
                    self.proc.wait(timeout=1)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            if self.proc.poll() is None:
                for child in _descendants(self.proc.pid):  # daemons reparented to a subreaper template too
                    _signal(child, signal.SIGKILL)
                try:
                    self.proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                _, err_b = self.proc.communicate(timeout=5)
                err = (err_b or b"").decode("utf-8", "replace")
            except (subprocess.TimeoutExpired, ValueError, OSError):
                pass
        _kill_uid(self.uid, None)
        _remove_workdir(self.base)
        self.proc, self.base, self._buf = None, None, b""
        return err

    def close(self) -> None:
        with self.lock:
            self._stop(graceful=True)


@functools.lru_cache(maxsize=1)
def _spawner() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawner")


_templates: dict[int, Template] = {}
_templates_lock = threading.Lock()


def template(slot: int) -> Template:
    with _templates_lock:
        if slot not in _templates:
            _templates[slot] = Template(slot)
        return _templates[slot]


@atexit.register
def close_all() -> None:
    """Stop every slot sandbox (also called by tests to check nothing is left behind)."""
    with _templates_lock:
        for t in _templates.values():
            t.close()
        _templates.clear()


def run_program(program: str, test: str = "", *, entry_point: str | None = None, keep: tuple[str, ...] = (),
                limits: Limits | None = None, stdin: str = "", slot: int = 0) -> Verdict:
    """Run `program`, then `test` (asserts; and `check(entry_point)` when given) in the sandbox.

    `keep`: names the program may define that shadow builtins and that the tests still use.
    `slot`: the worker slot (each has its own sandbox and, as root, its own uid); one program at a time per slot.
    """
    limits = limits or DEFAULT_LIMITS
    slot_sandbox = template(slot)
    job = {"program": program, "test": test, "entry_point": entry_point, "keep": list(keep), "input": stdin,
           "rlimits": limits.rlimits(slot_sandbox.nproc_base), "timeout_s": limits.timeout_s,
           "grace_s": limits.grace_s, "tail_bytes": limits.tail_bytes}
    return slot_sandbox.run(job, limits)


def nproc_base(drop_uid: bool) -> int | None:
    """RLIMIT_NPROC's base: a slot uid owns only its sandbox (0); a plain user shares the count with
    all their processes (approximate); root: None (the kernel never enforces it for root)."""
    return 0 if drop_uid else None if os.geteuid() == 0 else _processes_of(os.getuid())


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


def _classify(reply: dict[str, Any], limits: Limits) -> tuple[Status, str]:
    status = reply["status"]
    if reply["timed_out"]:
        return Status.TIMEOUT, f"wall-clock limit ({limits.timeout_s:g} s) reached; every process it started was killed"
    if reply["output_bytes"] >= limits.file_bytes:
        return Status.KILLED, f"output limit ({limits.file_bytes} bytes) reached"
    kind, _, rest = reply["report"].partition(" ")
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if reply["passed"] and sig is None and os.WEXITSTATUS(status) == 0:
        return Status.PASSED, ""
    if kind == "FAIL":
        return Status.FAILED, rest
    if kind == "MEMORY":
        return Status.MEMORY, f"MemoryError in the {rest} (address-space limit {limits.memory_bytes} bytes)"
    if kind == "EXIT":
        return Status.FAILED, f"the program exited ({rest}) before the checks completed"
    if kind == "ERROR":
        return Status.ERROR, rest
    if sig == signal.SIGXCPU:
        return Status.TIMEOUT, "CPU-time limit reached (SIGXCPU)"
    if sig is not None:
        name = _SIGNAL_NAMES.get(sig, str(sig))
        if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE):
            return Status.ERROR, f"crashed ({name})"
        return Status.KILLED, f"killed by {name}"
    if reply.get("forged"):
        return Status.FAILED, "a pass report without this run's nonce (forged)"
    return Status.FAILED, f"the program exited (code {os.waitstatus_to_exitcode(status)}) before the checks completed"


def _make_workdir(uid: int | None) -> str:
    path = tempfile.mkdtemp(prefix="evalsuite-sbx-")
    if uid is not None:
        os.chown(path, uid, uid)
    return path


def _remove_workdir(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def _processes_of(uid: int) -> int | None:
    """How many processes `uid` runs (None without /proc: RLIMIT_NPROC is then left alone)."""
    if not os.path.isdir("/proc/self"):
        return None
    return sum(1 for e in os.scandir("/proc") if e.name.isdigit() and _owner(e) == uid)


def _owner(entry: os.DirEntry) -> int | None:
    try:
        return entry.stat().st_uid
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (no psutil needed)."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of `pid` (parents first)."""
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int | None, spare: int | None) -> None:
    """SIGKILL every process of the slot uid but `spare`: catches daemons that left the session."""
    if uid is None:
        return
    for _ in range(3):
        found = False
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid and int(entry.name) != spare:
                        os.kill(int(entry.name), signal.SIGKILL)
                        found = True
                except (FileNotFoundError, ProcessLookupError, PermissionError):
                    pass
        if not found:
            return
        time.sleep(0.01)
