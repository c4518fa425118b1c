"""Process and mount confinement for the sandbox template (stdlib only; runs inside the sandbox).

Concatenated before `_bootstrap.py` into the template's `python -c` script (see `execute.py`), and
run by `layers` to probe whether the `unshare` mode can make the root read-only.
"""

import os


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
