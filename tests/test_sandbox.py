"""Hostile programs, run for real through evalsuite's sandbox: the verdict, and a host left untouched.

All attacks run once, in parallel, in a module fixture (the sandbox pool, 1 s limits); each test
then checks its attack's verdict and its specific host effect, and the last tests check what the
whole batch may not leave behind: processes, temp dirs, files, harness memory. Programs that read
instead of write look for marker files planted outside (under /opt, the project's tree, a home dir,
the host's /tmp) and for another process's command line; no marker may reach any verdict.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from evalsuite import sandbox
from evalsuite.sandbox import Job, Limits, Status
from evalsuite.sandbox.execute import close_all

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the sandbox needs a POSIX host")

MARK = "evalsuite-attack-" + uuid.uuid4().hex[:10]  # in every hostile process's command line / file name
REPO = Path(__file__).resolve().parents[1]
VICTIM_DIR = Path("/var/tmp") / MARK  # world-writable, so only the read-only mount protects it
SECRET = "s3cret-" + MARK
LEAK = "planted-" + uuid.uuid4().hex[:12]  # planted files hold it, a host process has it as argument
PLANTED = [Path("/opt") / f"{MARK}.txt", REPO / f"{MARK}.txt", Path("/home") / MARK / "notes.txt",
           Path(tempfile.gettempdir()) / f"{MARK}.txt"]  # world-readable (0644, dirs 0755)
_READ = "def show(path):\n    text = open(path).read()\n    print(text)\n    raise ValueError(text)\n"
LIMITS = Limits(timeout_s=1.0, memory_bytes=512 << 20)
NOT_PASSED = {Status.FAILED, Status.ERROR, Status.TIMEOUT, Status.MEMORY, Status.KILLED}
OK_FUNC = "def f(x):\n    return x + 1\n"
OK_TEST = "assert f(1) == 2\n"
SLEEPER = "import time; time.sleep(300)"  # a daemon that stays up (its argv carries the mark; `sleep` rejects it)
WRONG = "def f(x):\n    return 99\n"
FABS_TEST = "import math\nassert math.fabs(f(1) - 2) < 1e-6\n"

# name -> (program, test, allowed statuses)
ATTACKS: dict[str, tuple[str, str, set[Status]]] = {
    "baseline_pass": (OK_FUNC, OK_TEST, {Status.PASSED}),
    "baseline_fail": ("def f(x):\n    return x\n", OK_TEST, {Status.FAILED}),
    "fork_bomb": ("import os\nwhile True:\n    os.fork()\n", "", NOT_PASSED),
    "memory_bomb": ("x = []\nwhile True:\n    x.append(bytes(100 << 20))  # calloc: address space, not page faults\n", "", {Status.MEMORY}),
    "infinite_loop_python": ("while True:\n    pass\n", "", {Status.TIMEOUT}),
    "infinite_loop_c_regex": ("import re\nre.match(r'(a+)+$', 'a' * 64 + 'b')\n", "", {Status.TIMEOUT}),
    "sleep_past_limit": ("import time\ntime.sleep(30)\n", "", {Status.TIMEOUT}),
    "ignore_sigterm": ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n", "",
                       {Status.TIMEOUT}),
    "detached_grandchild": (
        f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{MARK}'],"
        " start_new_session=True)\n" + OK_FUNC, OK_TEST, {Status.PASSED}),
    "double_fork_daemon": (
        f"import os, sys\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', {SLEEPER!r}, '{MARK}'])\n    os._exit(0)\n" + OK_FUNC,
        OK_TEST, {Status.PASSED}),
    "write_10gb_file": ("with open('big', 'wb') as f:\n    for _ in range(10 * 1024):\n        f.write(b'x' * (1 << 20))\n",
                        "", {Status.ERROR, Status.KILLED}),
    "sparse_10gb_file": ("with open('sparse', 'wb') as f:\n    f.seek(10 << 30)\n    f.write(b'x')\n", "",
                         {Status.ERROR, Status.KILLED}),
    "write_into_repo": (f"open({str(REPO / MARK)!r}, 'w').write('pwned')\n", "", {Status.ERROR}),
    "write_into_home": (f"open('/root/{MARK}', 'w').write('pwned')\n", "", {Status.ERROR}),
    "write_world_writable_dir": (f"open({str(VICTIM_DIR / 'new')!r}, 'w').write('pwned')\n", "", {Status.ERROR}),
    "delete_outside": (f"import os\nos.remove({str(VICTIM_DIR / 'keep')!r})\n", "", {Status.ERROR}),
    "read_root_only_file": ("print(open('/etc/shadow').read())\n", "", {Status.ERROR}),
    "tcp_to_host_server": ("import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=0.5).send(b'hi')\n", "",
                           {Status.ERROR}),
    "dns_lookup": ("import socket\nsocket.getaddrinfo('pypi.org', 443)\n", "", {Status.ERROR}),
    "env_secrets": ("import os\nprint(sorted(os.environ.items()))\n" + OK_FUNC, OK_TEST, {Status.PASSED}),
    "kill_parent": ("import os\nos.kill(os.getppid(), 9)\n" + OK_FUNC, OK_TEST, NOT_PASSED),
    "read_supervisor_memory": ("import os\nopen(f'/proc/{os.getppid()}/mem', 'rb').read(1)\n", "", {Status.ERROR}),
    "ptrace_supervisor": (("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                          "assert libc.ptrace(16, os.getppid(), 0, 0) == 0, ctypes.get_errno()\n"), "", {Status.FAILED}),
    "kill_everything": ("import os\nos.kill(-1, 9)\n" + OK_FUNC, OK_TEST, NOT_PASSED),
    "sys_exit_before_asserts": ("import sys\nsys.exit(0)\n", "assert False\n", {Status.FAILED}),
    "os_exit_before_asserts": ("import os\nos._exit(0)\n", "assert False\n", {Status.FAILED}),
    "forged_pass_report": (("import os\nprint('PASS ' + '0' * 32)\nfor fd in range(3, 64):\n    try:\n"
                           "        os.write(fd, b'PASS ' + b'0' * 32 + b'\\n')\n    except OSError:\n        pass\n"
                           "os._exit(0)\n"), "assert False\n", {Status.FAILED}),
    "always_equal_object": (("class E:\n    def __eq__(self, other):\n        return True\n    __ne__ = __eq__\n"
                            "def f(x):\n    return E()\n"), OK_TEST, {Status.ERROR}),
    "patched_stdlib_eq": (("import collections\ncollections.Counter.__eq__ = lambda a, b: True\n"
                          "def f(x):\n    return collections.Counter('a')\n"), OK_TEST, {Status.ERROR}),
    "shadow_builtin_abs": ("def abs(x):\n    return 0\ndef f(x):\n    return 99\n", "assert abs(f(1) - 2) < 1e-6\n",
                           {Status.FAILED}),
    "rebind_assertion_error": (("import builtins, sys\nbuiltins.AssertionError = type('A', (Exception,), {})\n"
                               "builtins.isinstance = lambda *a: True\nbuiltins.BaseException = SystemExit\n"
                               "def f(x):\n    return 0\n"), OK_TEST, {Status.FAILED}),
    "settrace_skips_asserts": (("import sys\ndef t(frame, event, arg):\n    if frame.f_code.co_filename == '<test>':\n"
                               "        frame.f_lineno = frame.f_code.co_firstlineno + 99\n    return t\n"
                               "sys.settrace(t)\nsys.settrace = lambda f: None\ndef f(x):\n    return 0\n"), OK_TEST, {Status.FAILED}),
    "close_stdout_then_pass": ("import os\nos.close(1)\nos.close(2)\n" + OK_FUNC, OK_TEST, {Status.PASSED}),
    "print_1gb": ("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n", "",
                  {Status.KILLED, Status.ERROR}),
    "deep_recursion_segfault": ("import sys\nsys.setrecursionlimit(10 ** 7)\ndef r(n):\n    return sum(map(r, [n]))\nr(0)\n",
                                "", {Status.ERROR}),
    "ctypes_segfault": ("import ctypes\nctypes.string_at(0)\n", "", {Status.ERROR}),
    "thread_bomb": ("import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n",
                    "", NOT_PASSED),
    "subprocess_shell": (f"import subprocess\nsubprocess.check_call(['/bin/sh', '-c', 'echo pwned > {VICTIM_DIR}/sh'])\n",
                         "", {Status.ERROR}),
    # faking a pass by patching the standard library the tests use (f returns 99; the tests expect 2)
    "patch_math_fabs": ("import math\nmath.fabs = lambda x: 0\n" + WRONG, FABS_TEST, {Status.FAILED}),
    "patch_builtins_abs": ("import builtins\nbuiltins.abs = lambda x: 0\n" + WRONG, "assert abs(f(1) - 2) < 1e-6\n",
                           {Status.FAILED}),
    "patch_operator_eq": ("import operator\noperator.eq = lambda a, b: True\n" + WRONG,
                          "import operator\nassert operator.eq(f(1), 2)\n", {Status.FAILED}),
    "patch_from_import": ("import math\nmath.isclose = lambda *a, **k: True\n" + WRONG,
                          "from math import isclose\nassert isclose(f(1), 2)\n", {Status.FAILED}),
    "patch_sys_modules": ("import sys, types\nfake = types.ModuleType('math')\nfake.fabs = lambda x: 0\n"
                          "sys.modules['math'] = fake\n" + WRONG, FABS_TEST, {Status.FAILED}),
    "patch_module_class": ("import math, types\nclass M(types.ModuleType):\n    def __getattribute__(self, n):\n"
                           "        return (lambda x: 0) if n == 'fabs' else super().__getattribute__(n)\n"
                           "math.__class__ = M\n" + WRONG, FABS_TEST, {Status.FAILED}),
    "patch_stdlib_class": ("import collections\ncollections.Counter.most_common = lambda self, n=None: [(99, 1)]\n"
                           "def f(x):\n    return [(99, 1)]\n", "import collections\n"
                           "assert f(1) == collections.Counter([2]).most_common(1)\n", {Status.FAILED, Status.ERROR}),
    "patch_stdlib_code": ("import statistics\nstatistics.mean.__code__ = (lambda data: 2).__code__\n" + WRONG,
                          "import statistics\nassert statistics.mean([f(1)]) == 2\n", {Status.FAILED, Status.ERROR}),
    "patch_during_test_call": ("import math\ndef f(x):\n    math.fabs = lambda v: 0\n    return 99\n",
                               "import math\nassert f(0) != 0\n" + FABS_TEST, {Status.FAILED}),
    "patch_via_program_global": ("import math\ndef f(x):\n    math.fabs = lambda v: 0\n    return 99\n",
                                 "assert f(0) != 0\nassert math.fabs(f(1) - 2) < 1e-6\n", {Status.FAILED}),
    "audit_hook_repatches": ("import sys, math\ndef hook(e, a):\n    if e == 'exec':\n        math.fabs = lambda x: 0\n"
                             "sys.addaudithook(hook)\n" + WRONG, FABS_TEST, {Status.FAILED}),
    "thread_repatches": ("import threading, math, time\ndef loop():\n    while True:\n        math.fabs = lambda x: 0\n"
                         "        time.sleep(0.0005)\nthreading.Thread(target=loop, daemon=True).start()\n" + WRONG,
                         FABS_TEST, {Status.FAILED, Status.ERROR}),
    "patch_sandbox_itself": ("import __main__, types\nfake = types.ModuleType('math')\nfake.fabs = lambda x: 0\n"
                             "__main__.TestModules.import_ = lambda self, *a, **k: fake\n" + WRONG, FABS_TEST,
                             {Status.FAILED, Status.ERROR}),
    "baseline_stdlib_still_usable": (  # frozen library classes still subclass, namedtuple defaults still set
        "import collections, dataclasses, enum, fractions\nP = collections.namedtuple('P', 'a b', defaults=(1,))\n"
        "@dataclasses.dataclass\nclass D:\n    x: int = 1\nclass C(enum.Enum):\n    A = 1\n"
        "class Q(collections.Counter):\n    pass\ndef f(x):\n"
        "    return [P(0).b, D().x, C.A.value, sum(Q('ab').values()), fractions.Fraction(1, 2)]\n",
        "import fractions\nassert f(0) == [1, 1, 1, 2, fractions.Fraction(1, 2)]\n", {Status.PASSED}),
    # reading the host: each prints what it found and puts it in its error message (the failure explanation)
    "read_opt_file": (_READ + f"show({str(PLANTED[0])!r})\n", "", {Status.ERROR}),
    "read_project_tree": (_READ + f"show({str(PLANTED[1])!r})\n", "", {Status.ERROR}),
    "read_home_dir": (_READ + f"show({str(PLANTED[2])!r})\n", "", {Status.ERROR}),
    "read_host_tmp": (_READ + f"show({str(PLANTED[3])!r})\n", "", {Status.ERROR}),
    "read_project_source": (_READ + f"show({str(REPO / 'evalsuite' / 'sandbox' / 'layers.py')!r})\n", "", {Status.ERROR}),
    "read_other_cmdlines": (("import os, sys\nfound = []\nfor pid in os.listdir('/proc'):\n    try:\n"
                             "        found.append(open(f'/proc/{pid}/cmdline', 'rb').read().decode(errors='replace'))\n"
                             "    except OSError:\n        pass\nhits = [c for c in found if 'planted-' in c]\n"
                             "print(hits)\nraise ValueError(f'{len(found)} processes: {hits}')\n"), "", {Status.ERROR}),
    "walk_host_for_marker": (("import os\nfor top in sorted(os.listdir('/')):\n"
                              "    if top in ('usr', 'proc', 'sys', 'dev', 'bin', 'sbin', 'lib', 'lib64'):\n        continue\n"
                              "    for root, dirs, files in os.walk('/' + top):\n        for name in files:\n"
                              "            try:\n                with open(os.path.join(root, name), errors='replace') as f:\n"
                              "                    text = f.read(1 << 16)\n            except OSError:\n                continue\n"
                              "            if 'planted-' in text:\n                print(os.path.join(root, name), text, flush=True)\n"
                              "                raise ValueError(text)\n"), "", {Status.PASSED, Status.TIMEOUT}),
    "huge_error_message": ("raise ValueError('x' * 10000)\n", "", {Status.ERROR}),
    "signal_handler_repatches": ("import signal, math\n"
                                 "signal.signal(signal.SIGPROF, lambda *a: setattr(math, 'fabs', lambda x: 0))\n"
                                 "signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)\n" + WRONG,
                                 "import math\nfor _ in range(300000):\n    pass\n" + FABS_TEST, {Status.FAILED}),
}


class _Server:
    """A real TCP server on 127.0.0.1 counting the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port, self.accepted, self.stop = self.sock.getsockname()[1], 0, False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


def _marked_processes(mark: str = MARK) -> list[int]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(mark in part for part in (p.info["cmdline"] or [])):
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


def _sandbox_temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("evalsuite-sbx-*")}


@pytest.fixture(scope="module")
def batch():
    """Run every attack in parallel; yield verdicts plus host observations before/after."""
    close_all()  # fresh slot sandboxes, started after the secret is in our environment
    os.environ["EVALSUITE_TEST_SECRET"] = SECRET
    VICTIM_DIR.mkdir(mode=0o777)
    VICTIM_DIR.chmod(0o777)
    (VICTIM_DIR / "keep").write_text("keep")
    (VICTIM_DIR / "keep").chmod(0o666)
    server = _Server()
    for path in PLANTED:
        path.parent.mkdir(mode=0o755, exist_ok=True)
        path.write_text(LEAK)
        path.chmod(0o644)
    cmdline_holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", LEAK])
    temp_before = _sandbox_temp_dirs()
    harness = psutil.Process()
    rss_before = harness.memory_info().rss
    names = list(ATTACKS)
    jobs = [Job(ATTACKS[n][0].replace("PORT", str(server.port)), ATTACKS[n][1]) for n in names]
    t0 = time.perf_counter()
    verdicts = dict(zip(names, sandbox.run_many(jobs, workers=2, limits=LIMITS)))
    wall = time.perf_counter() - t0
    marked_after_runs = _marked_processes()
    after_runs = sandbox.run_program(OK_FUNC, OK_TEST, limits=LIMITS)  # the pool still works after all that
    rss_after = harness.memory_info().rss
    close_all()
    cmdline_holder.kill()
    cmdline_holder.wait()
    for path in PLANTED:
        path.unlink()
    (Path("/home") / MARK).rmdir()
    state = {"verdicts": verdicts, "server_accepted": server.accepted, "wall": wall, "marked": marked_after_runs,
             "after_runs": after_runs, "rss_growth": rss_after - rss_before, "temp_before": temp_before,
             "temp_after": _sandbox_temp_dirs()}
    server.close()
    yield state
    os.environ.pop("EVALSUITE_TEST_SECRET", None)
    for p in VICTIM_DIR.glob("*"):
        p.unlink()
    VICTIM_DIR.rmdir()


def test_at_least_25_attacks() -> None:
    assert len([n for n in ATTACKS if not n.startswith("baseline")]) >= 25


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_verdict(batch, name: str) -> None:
    v = batch["verdicts"][name]
    assert v.status in ATTACKS[name][2], f"{name}: {v.status.value} ({v.detail}) stderr={v.stderr[-300:]!r}"


def test_verdict_details(batch) -> None:
    v = batch["verdicts"]
    assert "before the checks completed" in v["sys_exit_before_asserts"].detail
    assert "before the checks completed" in v["os_exit_before_asserts"].detail
    assert "not a plain value" in v["always_equal_object"].detail
    assert "crashed (SIGSEGV)" in v["ctypes_segfault"].detail
    assert v["print_1gb"].wall_s < LIMITS.timeout_s and len(v["print_1gb"].stdout) <= LIMITS.tail_bytes
    assert v["fork_bomb"].status is not Status.PASSED
    assert "ValueError: xxx" in v["huge_error_message"].detail and len(v["huge_error_message"].detail) <= 2000
    for name in ("read_opt_file", "read_project_tree", "read_home_dir", "read_host_tmp", "read_project_source"):
        assert "FileNotFoundError" in v[name].detail or "PermissionError" in v[name].detail, (name, v[name].detail)
    assert "[]" in v["read_other_cmdlines"].detail


def test_no_host_file_or_process_reached_any_output(batch) -> None:
    """The planted markers (and the project's own source) appear in no verdict: not in its failure
    explanation, not in the stdout/stderr tails, the text that goes to samples.jsonl and the report."""
    source_line = (REPO / "evalsuite" / "sandbox" / "layers.py").read_text().splitlines()[0]
    for name, v in batch["verdicts"].items():
        for field in ("detail", "stdout", "stderr"):
            text = getattr(v, field)
            assert LEAK not in text and source_line not in text, f"{name}.{field} leaked: {text[-300:]!r}"


def test_host_files_untouched(batch) -> None:
    assert not any(path.exists() for path in PLANTED)  # the fixture's own clean-up
    assert not (REPO / MARK).exists()
    assert not Path("/root", MARK).exists()
    assert sorted(p.name for p in VICTIM_DIR.iterdir()) == ["keep"]
    assert (VICTIM_DIR / "keep").read_text() == "keep"


def test_no_network_reached_the_host(batch) -> None:
    assert batch["server_accepted"] == 0
    assert "unreachable" in batch["verdicts"]["tcp_to_host_server"].detail.lower() or \
        "refused" in batch["verdicts"]["tcp_to_host_server"].detail.lower()


def test_environment_is_minimal(batch) -> None:
    out = batch["verdicts"]["env_secrets"].stdout
    assert "PATH" in out and SECRET not in out and "EVALSUITE_TEST_SECRET" not in out


def test_no_leftover_processes_dirs_or_memory(batch) -> None:
    assert batch["marked"] == [], "detached descendants outlived their program"
    assert _marked_processes() == []
    assert batch["after_runs"].status is Status.PASSED
    assert batch["temp_after"] <= batch["temp_before"]
    assert batch["rss_growth"] < 64 << 20, f"harness grew {batch['rss_growth'] >> 20} MiB"
    uids = {sandbox.layers.slot_uid(s, g) for s in range(4) for g in range(16)}
    # zombies are allowed: bwrap leaves a killed sandbox's init for the host's init to reap
    left = [p.pid for p in psutil.process_iter(["uids", "status"])
            if p.info["uids"] and p.info["uids"].real in uids and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert left == [], "slot-uid processes left after close_all()"


def test_isolation_layers_reported() -> None:
    iso = sandbox.isolation()
    assert {"rlimit:AS", "rlimit:CPU", "rlimit:FSIZE", "rlimit:NOFILE", "nonce-verdict"} <= set(iso.layers)
    if iso.mode == "bwrap":
        assert {"net-ns:no-interfaces", "pid-ns", "mount-ns:ro-root", "mount-ns:host-hidden"} <= set(iso.layers)


# Fault injection: `setrlimit(RLIMIT_AS, ...)` fails, as on a host that forbids it
_FAIL_AS = ("import resource as _r\n_real_setrlimit = _r.setrlimit\n"
            "def _failing_setrlimit(res, value):\n    if res == _r.RLIMIT_AS:\n"
            "        raise OSError(1, 'injected: setrlimit(RLIMIT_AS) refused')\n    _real_setrlimit(res, value)\n"
            "_r.setrlimit = _failing_setrlimit\n")
_BIG_ALLOC = "x = bytearray(400 << 20)\ndef f(x):\n    return x + 1\n"


@pytest.mark.parametrize("inject", [False, True])
def test_a_limit_that_could_not_be_set_is_not_listed(monkeypatch: pytest.MonkeyPatch, inject: bool) -> None:
    """Each verdict lists only the rlimits its run set: with setrlimit(RLIMIT_AS) failing, a 400 MB
    allocation under a 256 MB limit passes and "rlimit:AS" is absent; without the fault it is MEMORY
    and listed. (Catches a sandbox that ignores the failure and still claims the limit.)"""
    from evalsuite.sandbox import execute

    close_all()
    if inject:
        monkeypatch.setattr(execute, "_BOOTSTRAP", _FAIL_AS + execute._BOOTSTRAP)
    try:
        v = sandbox.run_program(_BIG_ALLOC, OK_TEST, limits=Limits(timeout_s=5.0, memory_bytes=256 << 20))
    finally:
        close_all()
    assert "rlimit:CPU" in v.layers and "rlimit:FSIZE" in v.layers
    if inject:
        assert v.status is Status.PASSED and "rlimit:AS" not in v.layers, (v.status, v.layers)
    else:
        assert v.status is Status.MEMORY and "rlimit:AS" in v.layers, (v.status, v.layers)


def test_detection_lists_only_the_rlimits_its_probe_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """`isolation().layers` (recorded in each code task's config) comes from the probe's own setrlimit calls."""
    from evalsuite.sandbox import layers

    monkeypatch.setattr(layers, "_CONFINE", _FAIL_AS + layers._CONFINE)
    layers.detect.cache_clear()
    try:
        iso = layers.detect()
    finally:
        layers.detect.cache_clear()
    assert "rlimit:AS" not in iso.layers and "rlimit:CPU" in iso.layers, iso.layers


@pytest.mark.parametrize("mode", ["unshare", "none"])
def test_fallback_modes(mode: str, tmp_path: Path) -> None:
    """The weaker layers still give verdicts, time limits, process cleanup (run in a fresh process);
    `unshare` also a read-only root: a world-writable host dir outside the work dir stays unwritten,
    and a world-readable file under /opt is not there to read (none mode cannot hide it: see `layers`)."""
    mark = f"{MARK}-{mode}"
    victim = Path("/var/tmp") / mark
    victim.mkdir(mode=0o777)
    victim.chmod(0o777)
    planted = Path("/opt") / f"{mark}.txt"
    planted.write_text(LEAK)
    planted.chmod(0o644)
    jobs = [("def f(x):\n    return x + 1\n", "assert f(1) == 2"), ("while True:\n    pass\n", ""),
            (f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {SLEEPER!r}, {mark!r}],"
             " start_new_session=True)\nimport time\ntime.sleep(0.3)\n", ""),
            ("import sys\nsys.exit(0)", "assert False"),
            (f"open({str(victim / 'pwned')!r}, 'w').write('x')\nopen('mine', 'w').write('ok')", ""),
            (_READ + f"show({str(planted)!r})\n", "")]
    code = (
        "import json, sys, warnings\nwarnings.simplefilter('ignore')\nfrom evalsuite.sandbox import Job, Limits, run_many, isolation\n"
        "jobs = [Job(p, t) for p, t in json.loads(sys.argv[1])]\n"
        "vs = run_many(jobs, limits=Limits(timeout_s=1.0))\n"
        "leaked = any(sys.argv[2] in v.detail + v.stdout + v.stderr for v in vs)\n"
        "print(json.dumps([isolation().mode, list(isolation().layers), leaked] + [v.status.value for v in vs]))\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(jobs), LEAK], capture_output=True, text=True,
                              timeout=60, check=False, env={**os.environ, "EVALSUITE_SANDBOX": mode})
        written = sorted(p.name for p in victim.iterdir())
    finally:
        for p in victim.iterdir():
            p.unlink()
        victim.rmdir()
        planted.unlink()
    if proc.returncode != 0 and "cannot run" in proc.stderr and "still visible" not in proc.stderr:
        pytest.skip(f"{mode} mode unavailable here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    got_mode, got_layers, leaked, statuses = got[0], got[1], got[2], got[3:]
    assert [got_mode] + statuses[:4] == [mode, "passed", "timeout", "passed", "failed"]
    if mode == "unshare":
        assert "mount-ns:ro-root" in got_layers
        assert statuses[4] == "error" and written == [], "the unshare sandbox wrote outside its work dir"
        assert "mount-ns:host-hidden" in got_layers and statuses[5] == "error" and not leaked, "read a host file"
    else:
        assert {"mount-ns:ro-root", "mount-ns:host-hidden"}.isdisjoint(got_layers)  # none mode claims neither
    time.sleep(0.2)
    assert _marked_processes(mark) == []
    assert not any(Path(tempfile.gettempdir()).glob("evalsuite-sbx-*"))


def test_none_mode_without_slot_uid_kills_detached_daemons() -> None:
    """As a plain user there is no slot uid to sweep: the template, a child subreaper, kills setsid daemons."""
    import dataclasses
    import warnings

    from evalsuite.sandbox import execute, layers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        none = layers.detect("none")
    slot, mark = 97, f"{MARK}-subreaper"
    t = execute.Template(slot)
    t.iso = dataclasses.replace(none, drop_uid=False, layers=tuple(x for x in none.layers if x != "slot-uid"))
    t.uid, t.nproc_base = None, None
    execute._templates[slot] = t  # run_program uses this slot's template
    program = (f"import os, subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {SLEEPER!r}, '{mark}-a'],"
               " start_new_session=True)\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
               f"        os.execv(sys.executable, [sys.executable, '-c', {SLEEPER!r}, '{mark}-b'])\n    os._exit(0)\n"
               "import time\ntime.sleep(0.3)  # both daemons are up\n" + OK_FUNC)
    try:
        v = sandbox.run_program(program, OK_TEST, limits=LIMITS, slot=slot)
        left = _marked_processes(mark)
    finally:
        with execute._templates_lock:
            execute._templates.pop(slot, None)
        t.close()
    assert v.status is Status.PASSED, v.detail
    assert left == [], "detached daemons outlived their program in none mode without a slot uid"


LEGIT_PROGRAMS = {  # correct programs the stdlib-integrity defence must not fail (each failed before its fix)
    "threads_joined": ("import threading\nout = []\nts = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]\n"
                       "for t in ts: t.start()\nfor t in ts: t.join()\ndef f():\n    return sorted(out)\n",
                       "assert f() == [0, 1, 2, 3]\n"),
    "thread_pool": ("from concurrent.futures import ThreadPoolExecutor\nwith ThreadPoolExecutor(2) as ex:\n"
                    "    r = list(ex.map(lambda x: x * x, range(4)))\ndef f():\n    return r\n", "assert f() == [0, 1, 4, 9]\n"),
    "test_swaps_stdout": ("def f(n):\n    for i in range(n):\n        print(i)\n",
                          "import io, sys\nbuf, old = io.StringIO(), sys.stdout\nsys.stdout = buf\ntry:\n    f(3)\n"
                          "finally:\n    sys.stdout = old\nassert buf.getvalue() == '0\\n1\\n2\\n', repr(buf.getvalue())\n"),
    "test_feeds_stdin": ("def f():\n    a, b = map(int, input().split())\n    return a + b\n",
                         "import io, sys\nsys.stdin = io.StringIO('2 3\\n')\nassert f() == 5\n"),
    "lazy_reimport_keeps_identity": ("from queue import Queue\ndef f():\n    import queue\n    try:\n        Queue().get_nowait()\n"
                                     "    except queue.Empty:\n        return 1\n    return 0\n", "assert f() == 1\n"),
    "new_submodule_stays_reachable": ("import importlib.util\ndef f():\n    import importlib\n"
                                      "    return importlib.util.find_spec('math') is not None\n", "assert f() is True\n"),
}


@pytest.mark.parametrize("name", sorted(LEGIT_PROGRAMS))
def test_legitimate_programs_pass_the_integrity_defence(name: str) -> None:
    program, test = LEGIT_PROGRAMS[name]
    runs = 8 if name.startswith("thread") else 1  # the joined-thread race showed in ~half of the runs
    verdicts = sandbox.run_many([Job(program, test) for _ in range(runs)], workers=2, limits=LIMITS)
    assert [v.status for v in verdicts] == [Status.PASSED] * runs, [v.detail for v in verdicts]


def test_host_files_stay_out_of_samples_and_the_html_report(tmp_path: Path) -> None:
    """End to end: HumanEval answers that read planted host files (under /opt, the project's tree, a
    home dir), print them to stderr and raise them as the error are scored like any samples file; the
    marker is in no file of the run dir (samples.jsonl, results.json) and not in the HTML report."""
    from evalsuite.reports.compare import compare, load_runs
    from evalsuite.reports.html import render_html
    from evalsuite.runner import RunConfig, score_outputs
    from evalsuite.task import TaskContext
    from evalsuite.tasks.humaneval import read_problems

    planted = PLANTED[:3]
    for path in planted:
        path.parent.mkdir(mode=0o755, exist_ok=True)
        path.write_text(LEAK)
        path.chmod(0o644)
    problems = read_problems(TaskContext())[:3]
    rows = [{"task_id": p["task_id"], "completion": f"    import sys\n    text = open({str(path)!r}).read()\n"
             "    print(text, file=sys.stderr)\n    raise ValueError(text)\n"} for p, path in zip(problems, planted)]
    samples_file = tmp_path / "answers.jsonl"
    samples_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        cfg = RunConfig(tasks=["humaneval"], output_dir=str(tmp_path / "runs"), use_cache=False, allow_code_execution=True,
                        allow_missing=True)  # 3 of the 164 problems answered
        run_dir = score_outputs(cfg, outputs=str(samples_file))
        html = render_html(compare(load_runs([str(run_dir), str(run_dir)]), allow_mismatch=True))
    finally:
        for path in planted:
            path.unlink()
        (Path("/home") / MARK).rmdir()
    files = {p.name: p.read_text(errors="replace") for p in Path(run_dir).rglob("*") if p.is_file()}
    for name, text in {**files, "report.html": html}.items():
        assert LEAK not in text, f"{name} holds a host file's content"
    assert "No such file" in files["samples.jsonl"]  # the programs ran, and found nothing there
