"""Process, file-system and resource confinement for the sandbox template (stdlib only; runs inside it).

Concatenated before `_bootstrap.py` into the template's `python -c` script (see `execute.py`), and
run by `layers` to probe what this host allows. `layers` builds bwrap's mounts from the same lists.
"""

import os

# What a program may see of the host: the system directories (shared libraries, /usr/bin), a minimal
# /etc, /dev and its own /proc, plus the trees it is given (the interpreter's prefix, the work dir).
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime")
EMPTY_DIRS = ("home", "root", "opt", "srv", "mnt", "media", "var", "run", "tmp", "sys", "boot")  # bwrap: shown empty


def apply_rlimits(limits):
    """Set each rlimit (soft = hard = value, lowered to a finite hard limit); the names actually set.

    A limit is reported only when `getrlimit` reads back what was set: the verdict then lists only
    limits that held (a failed `setrlimit` must not leave "rlimits" among the layers).
    """
    import resource

    applied = []
    for name, value in limits.items():
        try:
            res = getattr(resource, name)
            hard = resource.getrlimit(res)[1]
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(res, (value, value))
            if resource.getrlimit(res) != (value, value):
                continue
        except (ValueError, OSError, AttributeError):
            continue
        applied.append(name)
    return applied


def children_of(parent):
    """Live (not zombie) children of `parent`, from /proc (empty where there is no /proc)."""
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for name in entries:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == parent and fields[0] != b"Z":
                out.append(int(name))
    return out


def become_subreaper():
    """PR_SET_CHILD_SUBREAPER: orphans of our children (setsid daemons, double forks) become ours to kill."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER = 36


def read_only_root(workdir):
    """unshare mode: every mount but /proc read-only, the work dir writable, then locked for good.

    Runs as root of the sandbox's user namespace, before any program. The work dir becomes a mount of
    its own (rw); every other mount is remounted read-only keeping its locked flags (nosuid, nodev, ...);
    then a nested user + mount namespace locks the flags, so a program (root there too) cannot remount rw.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def call(what, *args):
        if getattr(libc, what)(*args) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}{args[:2]}: {os.strerror(err)}")

    ms_rdonly, ms_remount, ms_bind = 1, 32, 4096
    keep = {os.ST_NOSUID: 2, os.ST_NODEV: 4, os.ST_NOEXEC: 8, os.ST_NOATIME: 1024, os.ST_NODIRATIME: 2048,
            os.ST_RELATIME: 1 << 21}
    call("mount", workdir.encode(), workdir.encode(), None, ms_bind, None)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    for point in dict.fromkeys(points):
        if point == workdir or point == "/proc" or point.startswith("/proc/") or not os.path.exists(point):
            continue
        flags = os.statvfs(point).f_flag
        extra = sum(ms for st, ms in keep.items() if flags & st)
        if not flags & (os.ST_NOATIME | os.ST_RELATIME):
            extra |= 1 << 24  # MS_STRICTATIME: the atime mode is locked too, so say the one it has
        call("mount", None, point.encode(), None, ms_remount | ms_bind | ms_rdonly | extra, None)
    call("unshare", 0x10000000 | 0x00020000)  # CLONE_NEWUSER | CLONE_NEWNS: the mounts are now locked


def hide_host(keep, hide):
    """unshare mode: show the program only what Python needs, before `read_only_root`.

    An empty tmpfs over every top-level directory but SYSTEM_DIRS, /dev and /proc (so /home, /root,
    /opt, /srv, /mnt, /media, /var, /tmp, /run, /sys, the project's tree...), /dev/null over top-level
    files, a tmpfs /etc holding only ETC_FILES, an empty /dev/shm; then each `keep` path (the
    interpreter's prefix, the work dir) bound back from a descriptor opened before it was covered,
    and an empty tmpfs over each `hide` path (site-packages inside the prefix).
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ms_bind, ms_rec = 4096, 16384

    def mount(src, dst, fstype, flags, data=None):
        if libc.mount(src and src.encode(), dst.encode(), fstype and fstype.encode(), flags,
                      data and data.encode()) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {src} on {dst}: {os.strerror(err)}")

    def empty(path):
        mount("evalsuite-empty", path, "tmpfs", 0, "size=64k,mode=755")

    keep = [os.path.realpath(p) for p in keep if os.path.exists(p)]
    fds = {p: os.open(p, os.O_PATH) for p in keep + ["/etc"]}
    covered = set()
    for name in sorted(os.listdir("/")):
        path = "/" + name
        if name in SYSTEM_DIRS or name in ("dev", "proc") or os.path.islink(path):
            continue
        if os.path.isdir(path):
            empty(path)
            covered.add(path)
        elif os.path.isfile(path):
            mount("/dev/null", path, None, ms_bind)
    etc = f"/proc/self/fd/{fds['/etc']}"
    for name in ETC_FILES:
        src, dst = f"{etc}/{name}", f"/etc/{name}"
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        elif os.path.isdir(src):
            os.mkdir(dst)
            mount(src, dst, None, ms_bind | ms_rec)
        elif os.path.isfile(src):
            os.close(os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644))
            mount(src, dst, None, ms_bind)
    if os.path.isdir("/dev/shm"):
        empty("/dev/shm")
    for path in keep:
        if not any(path == c or path.startswith(c + "/") for c in covered):
            continue  # under a system directory: still there
        src = f"/proc/self/fd/{fds[path]}"
        if os.path.isdir(src):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
        mount(src, path, None, ms_bind | ms_rec)
    for fd in fds.values():
        os.close(fd)
    for path in hide:
        if os.path.isdir(path):
            empty(path)
