"""Which isolation layers this host allows, detected once per process, and the command prefix.

Order of preference (strongest first):
1. `bwrap`: fresh user, mount, network (no interfaces, no loopback), PID, IPC and UTS namespaces,
   cleared environment; a read-only root built from scratch (below), a private tmpfs work dir.
2. `unshare`: user + mount + network + PID namespaces via util-linux; the bootstrap covers the host
   the same way (`_confine.hide_host`), then remounts every mount read-only but the work dir (a host
   temp dir bound back) and locks that in a nested user namespace.
3. `none`: rlimits + process group only (macOS, locked-down containers), with a warning once. It
   hides nothing: a program reads every file the user it runs as may read (as root, the slot uid:
   every world-readable file, the project's tree, /proc/*/cmdline of every process), and whatever
   it prints can land in samples.jsonl and the report. Use bwrap or unshare for untrusted models.
What bwrap and unshare show of the host file system ("mount-ns:host-hidden"): the system directories
(`_confine.SYSTEM_DIRS`: /usr and its /bin, /lib links: the shared libraries), a minimal /etc
(`_confine.ETC_FILES`: the loader's cache and the time zone), a fresh /dev, the sandbox's own /proc,
and the interpreter's prefix (`python_view`: sys.prefix / exec_prefix, asked of the interpreter itself,
with its site-packages covered; the sandbox runs `python -I -S`, standard library only). /home, /root,
/opt, /srv, /mnt, /media, /var, /run, /sys, /tmp and every other top-level path are empty.
Every mode adds rlimits (set by the in-sandbox bootstrap; a layer "rlimit:NAME" is listed only for
the limits the probe, and each run, could set), its own process group killed with SIGKILL, and,
when evalsuite runs as root, a dedicated unprivileged uid per worker slot (so the kernel enforces
RLIMIT_NPROC, which it never does for root, and nothing root-owned is writable).
`EVALSUITE_SANDBOX=bwrap|unshare|none` forces a mode (tests use it to exercise the fallbacks).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from evalsuite.errors import UsageError
from evalsuite.sandbox._confine import EMPTY_DIRS, ETC_FILES, SYSTEM_DIRS

TMPFS_BYTES = 64 * 1024 * 1024  # the private /tmp of a bwrap sandbox (memory-backed, gone at exit)
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_CONFINE = (Path(__file__).parent / "_confine.py").read_text(encoding="utf-8")
_UID_BASE = 200_000  # slot uids: far above real accounts; distinct per evalsuite process and slot

MODE_LAYERS = {
    "bwrap": ["bwrap", "user-ns", "mount-ns:ro-root", "mount-ns:host-hidden", "net-ns:no-interfaces", "pid-ns",
              "ipc-ns", "uts-ns", "tmpfs-workdir", "clean-env"],
    "unshare": ["unshare", "user-ns", "mount-ns:ro-root", "mount-ns:host-hidden", "net-ns:no-interfaces", "pid-ns",
                "private-workdir", "clean-env"],
    "none": ["private-workdir", "clean-env"],
}
COMMON_LAYERS = ["process-group-kill", "output-cap", "nonce-verdict"]
RLIMIT_LAYER = "rlimit:"  # + the short name of each limit set ("rlimit:AS"), after the mode's layers


def rlimit_layers(applied: list[str] | tuple[str, ...]) -> list[str]:
    """Layer names for the rlimits that were set: RLIMIT_AS -> "rlimit:AS"."""
    return [RLIMIT_LAYER + name.removeprefix("RLIMIT_") for name in applied]


def with_rlimits(layer_names: tuple[str, ...], applied: list[str]) -> tuple[str, ...]:
    """`layer_names` with its rlimit entries replaced by those for `applied` (what one run could set)."""
    rest = [x for x in layer_names if not x.startswith(RLIMIT_LAYER)]
    mode_layers = [x for x in rest if x not in COMMON_LAYERS and x != "slot-uid"]
    return tuple(mode_layers + rlimit_layers(applied) + [x for x in rest if x not in mode_layers])


@dataclass(frozen=True)
class PythonView:
    """The host paths an interpreter needs inside the sandbox, and its site dirs to cover."""

    binds: tuple[str, ...]
    hide: tuple[str, ...]


_VIEW_CODE = (
    "import json, os, sys, sysconfig\n"
    "roots = [os.path.realpath(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)]\n"
    "site = {os.path.realpath(sysconfig.get_path(k, s)) for s in sysconfig.get_scheme_names()\n"
    "        for k in ('purelib', 'platlib') if sysconfig.get_path(k, s)}\n"
    "print(json.dumps([sorted(set(roots)), sorted(p for p in site if os.path.isdir(p))]))\n")


@functools.cache
def python_view(python: str) -> PythonView:
    """Ask `python` (as `-I -S` runs it) where its prefix is; bind that, cover its site-packages.

    Only prefixes outside the system directories need a bind; a system interpreter (/usr) needs none.
    """
    r = subprocess.run([python, "-I", "-S", "-c", _VIEW_CODE], capture_output=True, text=True, timeout=20,
                       check=False, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        return PythonView((), ())
    roots, site = json.loads(r.stdout)
    system = tuple("/" + d for d in SYSTEM_DIRS)
    binds = tuple(p for p in roots if p != "/" and not p.startswith(tuple(s + "/" for s in system)) and p not in system)
    shown = system + binds
    hide = tuple(p for p in site if any(p.startswith(s + "/") for s in shown))
    return PythonView(binds, hide)


def _bwrap_view(view: PythonView) -> list[str]:
    """bwrap's file system: system dirs, minimal /etc, the interpreter's prefix; the rest empty."""
    out: list[str] = []
    for name in SYSTEM_DIRS:
        path = "/" + name
        if os.path.islink(path):
            out += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            out += ["--ro-bind", path, path]
    for name in ETC_FILES:
        path = "/etc/" + name
        if os.path.islink(path):
            out += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            out += ["--ro-bind", path, path]
    for path in view.binds:
        out += ["--ro-bind", path, path]
    for path in view.hide:
        out += ["--size", "65536", "--tmpfs", path, "--remount-ro", path]
    for name in EMPTY_DIRS:
        if name != "tmp":
            out += ["--dir", "/" + name]
    return out


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
        bw = [shutil.which("bwrap") or "bwrap", *_bwrap_view(python_view(iso.python)), "--dev", "/dev",
              "--proc", "/proc", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp", "--size", str(TMPFS_BYTES),
              "--tmpfs", "/dev/shm", "--remount-ro", "/", "--unshare-all", "--die-with-parent", "--new-session",
              "--chdir", "/tmp", "--clearenv"]
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


def view_args(iso: Isolation, workdir: str) -> list[str]:
    """The bootstrap's arguments for the unshare mode's file system: JSON of what to keep and hide."""
    view = python_view(iso.python)
    return [json.dumps({"keep": [*view.binds, workdir], "hide": list(view.hide)})]


def _probe(iso: Isolation) -> tuple[str | None, list[str]]:
    """Run `python -c` under `iso`: (None when it works, else why not; the rlimits it could set)."""
    from evalsuite.sandbox.execute import DEFAULT_LIMITS, nproc_base

    limits = DEFAULT_LIMITS.rlimits(nproc_base(iso.drop_uid))
    code = (_CONFINE + "\nimport json, socket, sys\n"
            "assert sys.version_info >= (3, 10), 'needs Python 3.10+'\n")
    if iso.mode == "unshare":  # the hidden, read-only root must work too (the template does the same at start)
        spec = json.loads(view_args(iso, "/tmp")[0])
        code += (f"hide_host({spec['keep']!r}, {spec['hide']!r})\nread_only_root('/tmp')\n"
                 "assert not os.access('/usr', os.W_OK), 'root still writable'\n")
    if iso.mode != "none":
        code += f"assert set(os.listdir('/etc')) <= {set(ETC_FILES)!r}, 'host /etc still visible'\n"
    code += (f"applied = apply_rlimits({limits!r})\n"
             "print(os.getpid(), len(socket.if_nameindex()) if hasattr(socket, 'if_nameindex') else -1,"
             " json.dumps(applied))\n")
    uid = slot_uid(255) if iso.drop_uid else None
    try:
        r = subprocess.run(command(iso, [iso.python, "-I", "-S", "-c", code], uid, "/tmp"),
                           capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}", []
    if r.returncode != 0:
        return (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:200], []
    pid, nifs, applied = r.stdout.strip().split(" ", 2)
    if iso.mode != "none" and pid not in {"1", "2", "3"}:
        return f"no PID namespace (pid {pid})", []
    if iso.mode != "none" and nifs not in {"0", "1"}:  # 1 = a downed loopback in some kernels
        return f"network namespace has {nifs} interfaces", []
    return None, json.loads(applied)


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
        why, applied = _probe(iso)
        if why is None:
            iso = Isolation(iso.mode, with_rlimits(iso.layers, applied), iso.drop_uid, iso.python, "; ".join(reasons))
            if iso.mode == "none":
                warnings.warn(
                    "evalsuite sandbox: no namespaces available (" + ("; ".join(reasons) or "not Linux")
                    + "): model code runs with rlimits and a process group only, NOT isolated from the "
                    "network or your files", RuntimeWarning, stacklevel=2)
            return iso
        reasons.append(f"{iso.mode}{'+uid' if iso.drop_uid else ''} {iso.python}: {why}")
    raise UsageError("evalsuite sandbox: cannot run a Python subprocess at all: " + "; ".join(reasons))
