"""Which isolation layers this host allows, detected once per process, and the command prefix.

Order of preference (strongest first):
1. `bwrap`: fresh user, mount (read-only root, private tmpfs workdir), network (no interfaces,
   no loopback), PID, IPC and UTS namespaces, cleared environment.
2. `unshare`: user + mount + network + PID namespaces via util-linux; every mount is remounted
   read-only by the bootstrap (then locked in a nested user namespace) but the work dir, a host temp dir.
3. `none`: rlimits + process group only (macOS, locked-down containers), with a warning once.
Every mode adds rlimits (set by the in-sandbox bootstrap), its own process group killed with
SIGKILL, and, when evalsuite runs as root, a dedicated unprivileged uid per worker slot (so the
kernel enforces RLIMIT_NPROC, which it never does for root, and nothing root-owned is writable).
`EVALSUITE_SANDBOX=bwrap|unshare|none` forces a mode (tests use it to exercise the fallbacks).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from evalsuite.errors import UsageError

TMPFS_BYTES = 64 * 1024 * 1024  # the private /tmp of a bwrap sandbox (memory-backed, gone at exit)
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_CONFINE = (Path(__file__).parent / "_confine.py").read_text(encoding="utf-8")
_UID_BASE = 200_000  # slot uids: far above real accounts; distinct per evalsuite process and slot

MODE_LAYERS = {
    "bwrap": ["bwrap", "user-ns", "mount-ns:ro-root", "net-ns:no-interfaces", "pid-ns", "ipc-ns",
              "uts-ns", "tmpfs-workdir", "clean-env"],
    "unshare": ["unshare", "user-ns", "mount-ns:ro-root", "net-ns:no-interfaces", "pid-ns", "private-workdir",
                "clean-env"],
    "none": ["private-workdir", "clean-env"],
}
COMMON_LAYERS = ["rlimits", "process-group-kill", "output-cap", "nonce-verdict"]


@dataclass(frozen=True)
class Isolation:
    """The detected mode, the layers it gives, and whether slot uids are used."""

    mode: str
    layers: tuple[str, ...]
    drop_uid: bool
    python: str = sys.executable  # an interpreter the sandbox can run (the slot uid may not read ours)
    reason: str = ""  # why a stronger mode was not used


def slot_uid(slot: int, generation: int = 0) -> int:
    """A uid no real account uses, distinct per (evalsuite process, worker slot, restart generation).

    A fresh uid per restart: bwrap leaves its killed sandbox's init for the host's init to reap,
    and until then that zombie still counts toward its uid's RLIMIT_NPROC.
    """
    return _UID_BASE + ((os.getpid() % 4096) << 12) + ((slot % 256) << 4) + generation % 16


def _prefix_uid(uid: int | None) -> list[str]:
    if uid is None:
        return []
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


def command(iso: Isolation, argv: list[str], uid: int | None, workdir: str | None) -> list[str]:
    """The full command line that runs `argv` under the detected isolation."""
    env = ["PATH=" + SANDBOX_PATH, "HOME=" + (workdir or "/tmp"), "LANG=C.UTF-8", "PYTHONHASHSEED=0",
           "TMPDIR=" + (workdir or "/tmp")]
    pre = _prefix_uid(uid if iso.drop_uid else None)
    if iso.mode == "bwrap":
        bw = [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
              "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp", "--size", str(TMPFS_BYTES), "--tmpfs", "/dev/shm",
              "--unshare-all", "--die-with-parent", "--new-session", "--chdir", "/tmp", "--clearenv"]
        for kv in env:
            k, _, v = kv.partition("=")
            bw += ["--setenv", k, v]
        return pre + bw + ["--"] + argv
    clean_env = ["env", "-i", *env]
    if iso.mode == "unshare":
        us = [shutil.which("unshare") or "unshare", "--user", "--map-root-user", "--net", "--pid", "--fork",
              "--kill-child", "--mount", "--mount-proc"]
        return pre + us + clean_env + argv
    return pre + clean_env + argv


def interpreters() -> list[str]:
    """Ours first; then system ones, for when ours lives where the slot uid cannot read (/root)."""
    found = [sys.executable, getattr(sys, "_base_executable", sys.executable)]
    found += [p for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3")
              if (p := shutil.which(name, path=SANDBOX_PATH))]
    return [os.path.realpath(p) for p in dict.fromkeys(found)]


def _probe(iso: Isolation) -> str | None:
    """Run `python -c` under `iso`; None when it works, else why not."""
    code = ("import os,sys,socket;assert sys.version_info>=(3,10),'needs Python 3.10+';"
            "print(os.getpid(),len(socket.if_nameindex()) if hasattr(socket,'if_nameindex') else -1)")
    if iso.mode == "unshare":  # the read-only root must work too (the template does the same at start)
        code = (_CONFINE + "\nread_only_root('/tmp')\n"
                "assert not os.access('/usr', os.W_OK), 'root still writable'\n" + code)
    uid = slot_uid(255) if iso.drop_uid else None
    try:
        r = subprocess.run(command(iso, [iso.python, "-I", "-S", "-c", code], uid, "/tmp"),
                           capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if r.returncode != 0:
        return (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:200]
    pid, _, nifs = r.stdout.strip().partition(" ")
    if iso.mode != "none" and pid not in {"1", "2", "3"}:
        return f"no PID namespace (pid {pid})"
    if iso.mode != "none" and nifs not in {"0", "1"}:  # 1 = a downed loopback in some kernels
        return f"network namespace has {nifs} interfaces"
    return None


def _candidates(root: bool) -> list[Isolation]:
    """Strongest first: per mode, a slot uid (as root) before none, each interpreter in turn."""
    modes = [m for m, tool in (("bwrap", "bwrap"), ("unshare", "unshare"))
             if sys.platform.startswith("linux") and shutil.which(tool)] + ["none"]
    out = []
    for mode in modes:
        for drop in ([True, False] if root else [False]):
            common = tuple(COMMON_LAYERS + (["slot-uid"] if drop else []))
            out += [Isolation(mode, tuple(MODE_LAYERS[mode]) + common, drop, py) for py in interpreters()]
    return out


@functools.cache
def detect(forced: str | None = None) -> Isolation:
    """The strongest isolation that works here (cached per process)."""
    forced = forced or os.environ.get("EVALSUITE_SANDBOX") or None
    if forced and forced not in MODE_LAYERS:
        raise UsageError(f"EVALSUITE_SANDBOX={forced!r}: use one of {sorted(MODE_LAYERS)}")
    root = hasattr(os, "geteuid") and os.geteuid() == 0 and bool(shutil.which("setpriv"))
    reasons: list[str] = []
    for iso in _candidates(root):
        if forced and iso.mode != forced:
            continue
        why = _probe(iso)
        if why is None:
            iso = Isolation(iso.mode, iso.layers, iso.drop_uid, iso.python, "; ".join(reasons))
            if iso.mode == "none":
                warnings.warn(
                    "evalsuite sandbox: no namespaces available (" + ("; ".join(reasons) or "not Linux")
                    + "): model code runs with rlimits and a process group only, NOT isolated from the "
                    "network or your files", RuntimeWarning, stacklevel=2)
            return iso
        reasons.append(f"{iso.mode}{'+uid' if iso.drop_uid else ''} {iso.python}: {why}")
    raise UsageError("evalsuite sandbox: cannot run a Python subprocess at all: " + "; ".join(reasons))
