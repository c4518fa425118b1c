"""Keep the standard library the tests see as it was before the program ran (stdlib only; sandbox side).

The program and its tests share one interpreter (the tests call the program's functions), so a
program could fake a pass by patching what the tests rely on: `math.fabs = lambda x: 0`,
`builtins.abs = ...`, `operator.eq = ...`, `Counter.most_common = ...`, `statistics.mean.__code__ = ...`.
- In the template, once: every standard-library class loaded is marked immutable, as C types are
  (`freeze_classes`), and an audit hook refuses further audit hooks and any change to the code or
  defaults of a standard-library (or evalsuite) function (`install_audit_hook`).
- Before each fork, the template refreshes a `Snapshot` of every module's namespace (the child
  inherits it: no copying there); in the child, `restore()` before the tests puts back every
  module's namespace and class, `sys.modules` (names it had; modules the program imported stay, so its
  functions keep their identity), `sys.path`, the import hooks and `gc.callbacks`; `quiesce()` clears timers and
  signal handlers and refuses to test while threads the program started still run.
- The tests' `import` statements, and the modules among the program's names, give the tests private
  copies of the modules as they were (`TestModules`): a program function the tests call cannot patch
  what the next assert uses.
Out of scope, as with the nonce pipe: a program written against evalsuite's own internals (`ctypes`
writes into memory, frame or `gc` introspection of the snapshot).
Concatenated before `_bootstrap.py` into the template's `python -c` script (see `execute.py`).
"""

import gc
import os
import signal
import sys
from types import FunctionType, ModuleType

STDLIB_DIR = os.path.dirname(os.__file__)
_HEAPTYPE, _IMMUTABLETYPE = 1 << 9, 1 << 8
_NOT_FROZEN = ("importlib", "_frozen_importlib", "_frozen_importlib_external", "zipimport", "threading",
               "_weakrefset", "_threading_local")
FROZEN = set()  # ids of the classes frozen in the template (alive for good: their modules hold them)


def freeze_classes(own=()):
    """Mark the loaded standard library's classes, and `own`, immutable: `Counter.most_common = ...` raises.

    Sets Py_TPFLAGS_IMMUTABLETYPE (what C types have) through ctypes, after checking that the field
    found is `__flags__`; on any other layout the classes are left alone. Returns how many were frozen.
    """
    try:
        import ctypes
    except ImportError:
        return 0
    offset = 21 * ctypes.sizeof(ctypes.c_void_p)  # tp_flags in CPython's PyTypeObject (3.8-3.13, default build)
    found = list(own)
    for mod in list(sys.modules.values()):
        if isinstance(mod, ModuleType) and mod.__name__.partition(".")[0] in sys.stdlib_module_names:
            for value in list(vars(mod).values()):
                owner = str(getattr(value, "__module__", "") or "") if isinstance(value, type) else ""
                if owner.partition(".")[0] in sys.stdlib_module_names and not owner.startswith(_NOT_FROZEN):
                    found.append(value)
    for cls in found:
        if not cls.__flags__ & _HEAPTYPE or cls.__flags__ & _IMMUTABLETYPE:
            continue
        flags = ctypes.c_ulong.from_address(id(cls) + offset)
        if flags.value != cls.__flags__:
            break  # unknown layout: do not write
        flags.value |= _IMMUTABLETYPE
        FROZEN.add(id(cls))
    return len(FROZEN)


def own_code(namespace):
    """evalsuite's own classes and functions in the template's namespace (methods included)."""
    classes = [v for v in list(namespace.values()) if isinstance(v, type) and v.__module__ == namespace["__name__"]]
    functions = [v for v in list(namespace.values()) if isinstance(v, FunctionType)]
    functions += [f for c in classes for f in vars(c).values() if isinstance(f, FunctionType)]
    return classes, functions


def install_audit_hook(own_functions=()):
    """No audit hooks after ours; no new code or defaults for library or evalsuite functions."""
    protected = ("__code__", "__defaults__", "__kwdefaults__")
    ours = set(map(id, own_functions))

    def hook(event, args, _getattr=getattr, _stdlib=STDLIB_DIR, _error=RuntimeError, _ours=ours, _id=id):
        if event == "sys.addaudithook":
            raise _error("the sandbox takes no further audit hooks")  # refused silently by Python
        if event in ("object.__setattr__", "object.__delattr__") and args[1] in protected:
            code = _getattr(args[0], "__code__", None)
            if code is not None and (code.co_filename.startswith(_stdlib) or _id(args[0]) in _ours):
                raise _error(f"the program may not change {args[1]} of {args[0]!r} (standard library or sandbox)")

    ours.add(id(hook))
    sys.addaudithook(hook)


def _version_tags():
    """`dict -> its private version tag` (a ctypes view), or None where this CPython has none.

    CPython 3.6-3.13 bump a dict's `ma_version_tag` on every change: one read then says whether a
    module's namespace changed, without touching its values (in a forked child, touching every
    value's refcount copies hundreds of pages: ~5 ms per program). Checked on a probe dict first.
    """
    try:
        import ctypes
    except ImportError:
        return None
    word = ctypes.sizeof(ctypes.c_void_p)
    views = {}

    def tag(d):
        view = views.get(id(d))
        if view is None:
            view = views[id(d)] = ctypes.c_uint64.from_address(id(d) + 3 * word)
        return view

    probe = {}
    before = tag(probe).value
    probe["x"] = 1
    if ctypes.c_ssize_t.from_address(id(probe) + 2 * word).value != 1 or tag(probe).value == before:
        return None
    views.clear()
    return tag


_TAG = _version_tags()


class Snapshot:
    """Every module's namespace (and class), `sys.modules` and the import hooks, as of now.

    Kept by the template and `fresh()` just before each fork: the child inherits it without copying
    anything, and the template re-copies only what changed since (by version tag).
    """

    def __init__(self):
        self.modules_tag = _tag_of(sys.modules)
        self.sys_modules = sys.modules
        self.modules = dict(sys.modules)
        self.namespaces = [(m, type(m), vars(m), dict(vars(m))) + _tag_of(vars(m)) for m in self.modules.values()
                           if isinstance(m, ModuleType)]
        self.saved = {id(m): ns for m, _, _, ns, _, _ in self.namespaces}
        self.lists = [(lst, list(lst)) for lst in (sys.path, sys.meta_path, sys.path_hooks, gc.callbacks)]
        self.cache = (sys.path_importer_cache, dict(sys.path_importer_cache))

    def fresh(self):
        """This snapshot, updated to now (a new one where the tags cannot tell what changed)."""
        if _TAG is None or self.modules_tag[0].value != self.modules_tag[1]:
            return Snapshot()
        if any(tag.value != version or type(m) is not cls for m, cls, _, _, tag, version in self.namespaces):
            return Snapshot()
        self.lists = [(lst, list(lst)) for lst in (sys.path, sys.meta_path, sys.path_hooks, gc.callbacks)]
        self.cache = (sys.path_importer_cache, dict(sys.path_importer_cache))
        return self


def _tag_of(ns):
    if _TAG is None:
        return None, None
    view = _TAG(ns)
    return view, view.value


def restore(snap, keep_alive, _copy=dict.copy, _clear=dict.clear, _update=dict.update, _type=type,
            _setattr=object.__setattr__, _list=list, _map=map, _id=id, _ModuleType=ModuleType):
    """Put back what `snap` saw. Only locals here: the globals and builtins are among what is restored.

    The program's objects go to `keep_alive` first, so no finalizer of theirs runs in between.
    """
    for mod, cls, ns, saved, tag, version in snap.namespaces:
        if tag is not None:
            changed = tag.value != version
        else:  # compared by identity, in C: no __eq__ or __hash__ of the program's runs here
            changed = (_list(_map(_id, ns)) != _list(_map(_id, saved))
                       or _list(_map(_id, ns.values())) != _list(_map(_id, saved.values())))
        if changed or _type(mod) is not cls:
            keep_alive.append(_copy(ns))
            _clear(ns)
            _update(ns, saved)
            if _type(mod) is not cls:
                _setattr(mod, "__class__", cls)
    before = _copy(snap.sys_modules)
    keep_alive.append(before)
    _clear(snap.sys_modules)
    _update(snap.sys_modules, snap.modules)
    # modules the program imported stay (names the snapshot had are put back above): the program's own
    # functions re-import them during the tests and must get the same objects (`queue.Empty`,
    # `dataclasses.fields`), and a new submodule stays reachable from its (restored) package
    for name, mod in before.items():
        if name not in snap.modules:
            snap.sys_modules[name] = mod
            parent, _, child = name.rpartition(".")
            if parent and parent in snap.modules and _type(mod) is _ModuleType:
                _setattr(snap.modules[parent], child, mod)
    for lst, saved in snap.lists:
        keep_alive.append(lst[:])
        lst[:] = saved
    cache, saved = snap.cache
    keep_alive.append(_copy(cache))
    _clear(cache)
    _update(cache, saved)


_SIGNALS = tuple(signal.valid_signals()) if hasattr(signal, "valid_signals") else ()
_getsignal, _signal, _setitimer = signal.getsignal, signal.signal, getattr(signal, "setitimer", None)
_default_int = signal.default_int_handler
_sleep, _monotonic = __import__("time").sleep, __import__("time").monotonic


def _threads(_listdir=os.listdir):
    try:
        return len(_listdir("/proc/self/task"))
    except OSError:
        return 1


def quiesce():
    """No timer, signal handler or second thread of the program's may run during the tests."""
    if _setitimer is not None:
        for timer in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
            _setitimer(timer, 0)
    for sig in _SIGNALS:
        try:
            handler = _getsignal(sig)
            if callable(handler) and handler is not _default_int:
                _signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, TypeError):
            continue
    threads = _threads()
    deadline = _monotonic() + 0.5
    while threads > 1 and _monotonic() < deadline:  # a joined thread can be listed a moment longer
        _sleep(0.002)
        threads = _threads()
    if threads > 1:
        raise RuntimeError(f"the program left {threads - 1} thread(s) running; the tests run without them")


class TestModules:
    """Private copies, as `snap` saw them, of the modules the tests import or find among the program's names."""

    def __init__(self, snap, real_import):
        self.snap, self.real_import, self.copies = snap, real_import, {}

    def copy(self, mod, _isinstance=isinstance, _module=ModuleType, _id=id, _vars=vars, _str=str, _sys=sys):
        """Builtins bound at definition: a program function the tests call may rebind the real ones."""
        if not _isinstance(mod, _module):
            return mod
        saved = self.snap.saved.get(_id(mod))
        if saved is None or mod is _sys:  # imported after the snapshot: as it is; `sys` is restored and shared
            return mod  # (a test that swaps sys.stdout must see the program's prints)
        if _id(mod) not in self.copies:
            name = saved.get("__name__")
            twin = _module(name if _isinstance(name, _str) else "?")
            self.copies[_id(mod)] = twin
            prefix = f"{name}."
            _vars(twin).update({k: self.copy(v) if _isinstance(v, _module) and _str.startswith(v.__name__, prefix)
                                else v for k, v in saved.items()})
        return self.copies[_id(mod)]

    def import_(self, name, globals=None, locals=None, fromlist=(), level=0):
        """`__import__` for the tests."""
        return self.copy(self.real_import(name, globals, locals, fromlist, level))
