"""The template process that runs inside each sandbox slot: stdlib only, passed via `python -c`.

Start-up cost is what limits a sandbox's throughput, so each worker slot keeps one long-lived
sandbox whose interpreter has everything imported; per program it forks a child (~1 ms). The
template (not reachable by the child: it is the parent, marked non-dumpable, so no ptrace or
/proc/PID/mem) reads one JSON job per line on stdin and answers one JSON line on stdout:
- the child: new session, stdin from /dev/null, stdout/stderr to files in a fresh work dir
  (capped by RLIMIT_FSIZE), rlimits, then the program, then the tests in a fresh namespace
  (pristine builtins, only the program's names, every call's result checked to be a plain
  value), and only when the last check returned: read the nonce from a pipe and report it;
- the template writes a fresh random nonce into that pipe *after* the fork (the child's memory
  never held it), waits with the wall-clock deadline, kills every process left (the whole PID
  namespace but itself, or the child's session), wipes the work dir, and answers.
An early `sys.exit(0)`/`os._exit(0)`, a crash, or printing any text cannot produce a pass; nor can
patching the standard library the tests use (see `_integrity.py`, prepended to this script).
Without a PID namespace the template is a child subreaper: daemons the program detached (setsid,
double fork) are reparented to it, and it kills them all after each program.
(A program written to read evalsuite's own nonce pipe runs in the same process as its tests, as
with every peer; that is out of scope, and the isolation layers around it still hold.)
"""

import ast
import builtins
import io
import json
import os
import select
import shutil
import signal
import sys
import time

try:  # in the sandbox `_integrity.py` is prepended to this script (execute.py); imported elsewhere, e.g. by tools
    from evalsuite.sandbox._integrity import (
        FROZEN,
        Snapshot,
        TestModules,
        freeze_classes,
        install_audit_hook,
        own_code,
        quiesce,
        restore,
    )
    from evalsuite.sandbox._confine import apply_rlimits, become_subreaper, children_of, hide_host, read_only_root
except ImportError:
    pass

# Imported once here, so each forked program finds them loaded (HumanEval prompts start with
# `from typing import ...`; this saves every program its own import). Its own copy: patching one
# in a program changes nothing for the next.
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "heapq", "string", "bisect",
           "hashlib", "random", "statistics", "fractions", "copy", "operator", "cmath", "array", "datetime",
           "decimal")

STDLIB = os.path.dirname(os.__file__)
# Bound now, before any program runs: a program may rebind `builtins.AssertionError`, `sys.settrace`, ...
_AssertionError, _MemoryError, _SystemExit, _BaseException = AssertionError, MemoryError, SystemExit, BaseException
_type, _isinstance, _vars, _getattr, _dict = type, isinstance, vars, getattr, dict
_settrace, _setprofile, _read, _write = sys.settrace, sys.setprofile, os.read, os.write


def plain_guard():
    """Reject results whose comparisons run program code (e.g. an `__eq__` that is always True)."""
    containers = (list, tuple, set, frozenset)
    frozen = FROZEN_IDS  # the library's classes, immutable since the template froze them

    def trusted(cls):
        if not cls.__flags__ & (1 << 9) or id(cls) in frozen:  # C types and frozen ones: unchangeable
            return True
        if cls.__module__.partition(".")[0] not in sys.stdlib_module_names:
            return False
        for klass in cls.__mro__:
            for attr in _vars(klass).values():
                code = _getattr(attr, "__code__", None)
                if code is not None and not code.co_filename.startswith(STDLIB):
                    return False
        return True

    def check(value, depth=0):
        cls = _type(value)
        if not trusted(cls):
            raise TypeError(f"result of type {cls.__qualname__!r} is not a plain value (defined by the program)")
        if depth < 50 and _isinstance(value, containers):
            for v in value:
                check(v, depth + 1)
        elif depth < 50 and _isinstance(value, _dict):
            for k, v in value.items():
                check(k, depth + 1)
                check(v, depth + 1)

    def plain(value):
        check(value)
        return value

    return plain


class _Wrap(ast.NodeTransformer):
    def visit_Call(self, node):
        self.generic_visit(node)
        return ast.Call(ast.Name("__evalsuite_plain__", ast.Load()), [node], [])


def guard_calls(source):
    """Compile test code with every call wrapped: `f(x)` -> `__evalsuite_plain__(f(x))`."""
    tree = _Wrap().visit(ast.parse(source))
    return compile(ast.fix_missing_locations(tree), "<test>", "exec")


def run_job(job, report_fd, nonce_fd, snap):
    """In the child: the rlimits set (first line on `report_fd`, before any program code runs), then
    the program, then its tests; the outcome as the last line on `report_fd`. Never returns."""
    applied = apply_rlimits(job["rlimits"])  # a limit that cannot be set is not reported, so not listed
    _write(report_fd, ("LIMITS " + ",".join(applied) + "\n").encode())
    sys.stdin = io.StringIO(job.get("input", ""))
    if "random" in sys.modules:  # preloaded in the template: reseed, or every program draws the same numbers
        sys.modules["random"].seed()
    pristine = dict(builtins.__dict__)
    plain = plain_guard()
    keep = set(job.get("keep", ()))
    keep_alive = []

    def report(line):
        try:
            _write(report_fd, (line.replace("\n", " ")[:2000] + "\n").encode("utf-8", "replace"))
        except OSError:
            pass

    phase = "program"
    try:
        program = compile(job["program"], "<program>", "exec")
        test = guard_calls(job.get("test", ""))  # before the program runs: `ast` uses builtins it may rebind
        g = {"__name__": "__main__", "__builtins__": builtins}
        exec(program, g)  # noqa: S102 - inside the sandbox: running the program is the point
        phase = "test"
        restore(snap, keep_alive)  # first: the program may have patched what the next lines call
        _settrace(None)  # a trace function could jump over the asserts
        _setprofile(None)
        quiesce()
        modules = TestModules(snap, pristine["__import__"])
        pristine["__import__"] = modules.import_
        test_globals = {k: modules.copy(v) for k, v in g.items() if k not in pristine or k in keep}
        test_globals.update(__name__="__main__", __builtins__=pristine, __evalsuite_plain__=plain)
        exec(test, test_globals)  # noqa: S102
        entry = job.get("entry_point")
        if entry:
            if entry not in g:
                raise NameError(f"the program does not define {entry!r}")
            test_globals["check"](g[entry])
    except _AssertionError as exc:
        report(f"FAIL {phase} AssertionError: {exc}")
    except _MemoryError:
        report(f"MEMORY {phase}")
    except _SystemExit as exc:
        report(f"EXIT {phase} {exc.code!r}")
    except _BaseException as exc:
        report(f"ERROR {phase} {_type(exc).__name__}: {exc}")
    else:
        flush()
        report("PASS " + _read(nonce_fd, 256).decode())
    flush()
    os._exit(0)  # skip atexit handlers and finalizers the program may have registered


def flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110 - a closed or broken stream is the program's doing
            pass


def tail(path, keep):
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - keep))
            return f.read().decode("utf-8", "replace"), size
    except OSError:
        return "", 0


def child(job, workdir, report_w, nonce_r, snap):
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # replaces the template's control pipes: the child cannot talk to the harness
    for fd, name in ((1, "stdout"), (2, "stderr")):
        out = os.open(os.path.join(workdir, "." + name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    os.close(null)
    for fd in range(3, 256):
        if fd not in (report_w, nonce_r):
            try:
                os.close(fd)
            except OSError:
                pass
    os.chdir(workdir)
    os.environ["HOME"] = os.environ["TMPDIR"] = workdir
    run_job(job, report_w, nonce_r, snap)


def kill_rest(pid, own_pid_ns):
    """Kill the child and everything it started: all but ourselves (and init) in our PID namespace.

    Without one: the child's process group, then every process reparented to us (we are a child
    subreaper, see `become_subreaper`), which catches daemons that left the session.
    Repeated until /proc shows nobody else: a fork bomb can fork while the first kill runs.
    """
    me = os.getpid()
    for _ in range(500):
        try:
            if own_pid_ns:
                os.kill(-1, signal.SIGKILL)
            elif pid:
                os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        left = [] if own_pid_ns else children_of(me)
        for orphan in left:
            try:
                os.kill(orphan, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:  # orphans reparented to us (init of the namespace, or subreaper)
                pass
        except ChildProcessError:
            pass
        if not own_pid_ns and (not SUBREAPER or not left):
            return
        if own_pid_ns and not [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]:
            return
        time.sleep(0.002)


SUBREAPER = False  # set by serve(): orphans are reparented to this process
FROZEN_IDS = frozenset()  # set by serve(): the classes `freeze_classes` made immutable
SNAPSHOT = []  # [the modules as they are between programs] (a list: rebinding a global would change them)


def _wait_exit(pid, fd, timeout):
    """True when the child exited within `timeout` (pidfd on Linux; polling elsewhere)."""
    if fd is not None:
        return bool(select.select([fd], [], [], timeout)[0])
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.001)
    return False


def wait_child(pid, timeout, grace):
    """(wait status, peak RSS KiB, timed out) of the child: SIGTERM at the deadline, SIGKILL after `grace`."""
    fd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    try:
        timed_out = not _wait_exit(pid, fd, timeout)
        if timed_out:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0)):
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    break
                if wait and _wait_exit(pid, fd, wait):
                    break
    finally:
        if fd is not None:
            os.close(fd)
    _, status, usage = os.wait4(pid, 0)
    return status, usage.ru_maxrss, timed_out


def handle(job, base, own_pid_ns):
    workdir = os.path.join(base, "w")
    shutil.rmtree(workdir, ignore_errors=True)
    os.mkdir(workdir, 0o700)
    report_r, report_w = os.pipe()
    nonce_r, nonce_w = os.pipe()
    if not SNAPSHOT:
        SNAPSHOT.append(Snapshot())
    snap = SNAPSHOT[0] = SNAPSHOT[0].fresh()  # here, not in the child: it then copies no pages for it
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(report_r)
            os.close(nonce_w)
            child(job, workdir, report_w, nonce_r, snap)
        finally:
            os._exit(70)
    os.close(report_w)
    os.close(nonce_r)
    nonce = os.urandom(16).hex()  # made after the fork: the child's memory never held it
    os.write(nonce_w, nonce.encode())
    os.close(nonce_w)
    status, rss_kb, timed_out = wait_child(pid, job["timeout_s"], job.get("grace_s", 0.05))
    wall = time.perf_counter() - t0
    kill_rest(pid, own_pid_ns)
    os.set_blocking(report_r, False)
    try:
        report = os.read(report_r, 65536).decode("utf-8", "replace")
    except BlockingIOError:
        report = ""
    os.close(report_r)
    lines = report.splitlines() or [""]
    last = lines[-1] if len(lines) > 1 else ""  # the first line is ours (the rlimits), written before the program
    rlimits = [n for n in lines[0].removeprefix("LIMITS ").split(",") if n] if lines[0].startswith("LIMITS ") else []
    keep = job["tail_bytes"]
    out, out_size = tail(os.path.join(workdir, ".stdout"), keep)
    err, err_size = tail(os.path.join(workdir, ".stderr"), keep)
    shutil.rmtree(workdir, ignore_errors=True)
    return {"passed": last == "PASS " + nonce, "report": "" if last.startswith("PASS ") else last,
            "forged": last.startswith("PASS ") and last != "PASS " + nonce,
            "status": status, "rss_kb": rss_kb, "timed_out": timed_out, "wall_s": wall,
            "stdout": out, "stderr": err, "output_bytes": max(out_size, err_size), "rlimits": rlimits}


def serve(workdir_base, own_pid_ns, ro_root=False, view=None):
    global SUBREAPER, FROZEN_IDS
    import importlib

    if ro_root:
        if view is not None:
            hide_host(view["keep"], view["hide"])
        read_only_root(workdir_base)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    if sys.platform.startswith("linux"):  # non-dumpable: the child (same uid) may not ptrace us or read our memory
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE = 4
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
        if not own_pid_ns:
            SUBREAPER = become_subreaper()
    classes, functions = own_code(globals())
    freeze_classes(classes)
    FROZEN_IDS = frozenset(FROZEN)
    install_audit_hook(functions)
    ctrl_in, ctrl_out = sys.stdin.buffer, sys.stdout.buffer
    os.write(1, b'{"ready": true}\n')
    for line in ctrl_in:
        if not line.strip():
            continue
        try:
            reply = handle(json.loads(line), workdir_base, own_pid_ns)
        except OSError as exc:  # e.g. fork refused while a previous program's leftovers still die
            kill_rest(0, own_pid_ns)
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        ctrl_out.write(json.dumps(reply).encode() + b"\n")
        ctrl_out.flush()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2] == "1", sys.argv[3:4] == ["ro"], json.loads(sys.argv[4]) if sys.argv[4:] else None)
