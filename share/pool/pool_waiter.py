# The waiting process of an isolated-kernel warm pool sandbox (docs/pool.md).
# Run as `python3 -c <this source> PRELOAD...` inside a sandbox built from
# the kernelspec's plan: imports what a kernel start would import, then waits
# for its one claim on /run/isolated-kernel/pool-0 (only the helper that
# built this sandbox reaches it, through the sandbox's root descriptor).
# The claim is one JSON object: {"argv": [...], "env": {...}, "cwd": "..."},
# the kernelspec argv after the interpreter, e.g. ["-m", "ipykernel_launcher",
# "-f", "/path/kernel-x.json"]; it is run as `python3 ARGV` would run it.
# The answer is "ok", or "no REASON" when this waiter's imports could differ
# from a cold start's with that claim (the launcher then starts cold): a
# pooled kernel must not be able to tell that it was pooled.
import os
import sys

_ENV_AT_START = dict(os.environ)  # before any import that may change it
# `-c` put "" (our working directory, not the claim's) first on sys.path: a
# module there would shadow the one a cold start imports. Out until the claim
# puts the claim's directory there, as `python -m` does.
_PATH0 = sys.path.pop(0) if sys.path and sys.path[0] == "" else None

import ctypes  # noqa: E402  imported by ipykernel anyway
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.machinery  # noqa: E402
import json  # noqa: E402
import runpy  # noqa: E402
import socket  # noqa: E402

import ipykernel.kernelapp  # noqa: E402,F401  the ~0.5 s that a cold start spends
import ipykernel.ipkernel  # noqa: E402,F401

# What IPKernelApp.initialize imports itself (the shell's completer, the
# fault handler): a cold kernel has them by its first reply, so after these
# the modules are a cold kernel's, and the claim does not search sys.path
# (whose first entry is then the fresh working directory) for them.
for _name in ("faulthandler", "IPython.core.completerlib"):
    try:
        importlib.import_module(_name)
    except ImportError:
        pass

# The kernelspec's pool_preload. ipykernel sets MPLBACKEND to its inline
# backend when a kernel starts (IPKernelApp.init_gui_pylab, unless it is set),
# and matplotlib reads it once, at its import: a preloaded matplotlib must see
# what it sees when a cold kernel's user imports it (the variable reaches the
# claimed kernel's environment through _ENV_SET below, as a cold start sets it).
if sys.argv[1:] and not os.environ.get("MPLBACKEND"):
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
for _name in sys.argv[1:]:
    importlib.import_module(_name)

# What the imports did to the environment (debugpy, which ipykernel imports,
# sets PYDEVD_USE_FRAME_EVAL=NO unless it is set): a cold start does the same
# to the claim's environment, so it is done again there.
_ENV_SET = {k: v for k, v in os.environ.items() if _ENV_AT_START.get(k) != v}
_ENV_UNSET = [k for k in _ENV_AT_START if k not in os.environ]
# The variables a claim may change: ipykernel reads them when it starts,
# not when it is imported (re-read in _run).
_LAUNCH_ENV = ("JPY_PARENT_PID", "JPY_INTERRUPT_EVENT")
# What the imports built lives as long as the kernel: out of the cyclic
# collector's reach, no collection of the kernel's life and none of the
# interpreter's exit walks it again (~100 ms of CPU at every kernel's exit,
# the most of a shutdown; docs/pool.md "Shutdown"). Objects made after the
# claim (the kernel's and the user's) are collected as in a cold kernel.
gc.freeze()

_PATH = "/run/isolated-kernel/pool-0"


def _shadowed(cwd):
    """A module imported here that the claim's working directory would
    shadow in a cold start (sys.path[0] is the working directory there): a
    cold `python -m` would import the directory's copy, not ours."""
    try:
        names = set(os.listdir(cwd))
    except OSError:
        return None  # not a directory we can read: a cold start could not import from it either
    suffixes = importlib.machinery.all_suffixes()
    ours = {m for m in sys.modules if "." not in m and m != "__main__"} - set(sys.builtin_module_names)
    for name in sorted(names):  # usually far fewer than our modules
        for suffix in suffixes:
            if name.endswith(suffix) and name[:-len(suffix)] in ours:
                return name[:-len(suffix)]
        if name in ours and any(os.path.exists(os.path.join(cwd, name, "__init__" + s)) for s in suffixes):
            return name
    return None


def _refusal(claim):
    """Why this waiter cannot be what a cold start of CLAIM would be, or None."""
    env = claim.get("env", {})
    differ = sorted(k for k in set(env) | set(_ENV_AT_START)
                    if k not in _LAUNCH_ENV and env.get(k) != _ENV_AT_START.get(k))
    if differ:
        return "the claim's environment differs from the one the waiter imported in: " + ", ".join(differ)
    argv = claim.get("argv", [])
    cwd = claim.get("cwd", "/")
    if len(argv) >= 2 and argv[0] == "-m":
        mod = _shadowed(cwd)
        if mod:
            return "the working directory %s has its own %s, which a cold start would import" % (cwd, mod)
    return None


def _wait_for_claim():
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(_PATH + ".new")
    srv.listen(1)
    os.rename(_PATH + ".new", _PATH)  # appears only once it accepts
    conn, _ = srv.accept()
    os.unlink(_PATH)
    srv.close()
    data = b""
    with conn:
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                sys.exit(0)  # the helper gave up on this sandbox
            data += chunk
        claim = json.loads(data)
        why = _refusal(claim)
        conn.sendall(b"ok\n" if why is None else ("no " + why.replace("\n", " ") + "\n").encode())
    if why is not None:
        sys.exit(0)
    return claim


class _MmMap(ctypes.Structure):  # struct prctl_mm_map (linux/prctl.h)
    _fields_ = [(_f, ctypes.c_uint64) for _f in (
        "start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack",
        "arg_start", "arg_end", "env_start", "env_end", "auxv")] + [
        ("auxv_size", ctypes.c_uint32), ("exe_fd", ctypes.c_uint32)]


def _look_cold(argv, env):
    """Makes /proc/self/cmdline and /proc/self/environ what exec(2) of the
    kernel argv with ENV would have made them (argv then env strings, side by
    side where the waiter's were): rewritten in place, then pointed at with
    prctl(PR_SET_MM, PR_SET_MM_MAP), which needs no capability without an
    exe_fd. Nothing refers to the old strings any more (Python copied argv,
    and os.environ.clear() dropped the environ entries). Left as it is when
    the kernel refuses (an old kernel, a seccomp filter)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sbrk.restype = ctypes.c_void_p
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    with open("/proc/self/stat") as f:
        st = [int(x) for x in f.read().rsplit(")", 1)[1].split()[23:49]]  # fields 26..51
    m = _MmMap(start_code=st[0], end_code=st[1], start_stack=st[2], start_data=st[19], end_data=st[20],
               start_brk=st[21], arg_start=st[22], arg_end=st[23], env_start=st[24], env_end=st[25],
               auxv=0, auxv_size=0, exe_fd=0xFFFFFFFF)

    def set_map():
        # PR_SET_MM_MAP sets brk too: pass the current one, again if a
        # malloc moved it meanwhile (glibc's sbrk(0) is its cached break).
        for _ in range(10):
            m.brk = libc.sbrk(0)
            if libc.prctl(35, 14, ctypes.addressof(m), ctypes.sizeof(m), 0) != 0:  # PR_SET_MM, PR_SET_MM_MAP
                return False
            if libc.sbrk(0) == m.brk:
                return True
        return True
    if not set_map():  # a no-op first: only rewrite what we can point at
        return None
    a = b"".join(os.fsencode(x) + b"\0" for x in argv)
    e = b"".join(os.fsencode(k) + b"=" + os.fsencode(v) + b"\0" for k, v in env.items())
    room = m.env_end - m.arg_start
    keep = None
    if len(a) + len(e) <= room and m.env_start == m.arg_end:
        ctypes.memmove(m.arg_start, a + e + bytes(room - len(a) - len(e)), room)
        start = m.arg_start
    else:  # no room where exec put them: a buffer of our own, kept as long as the kernel runs
        keep = ctypes.create_string_buffer(a + e, len(a) + len(e))
        start = ctypes.addressof(keep)
    m.arg_start, m.arg_end = start, start + len(a)
    m.env_start, m.env_end = m.arg_end, m.arg_end + len(e)
    set_map()
    return keep


def _run(claim):
    os.environ.clear()
    os.environ.update(claim["env"])
    for k, v in _ENV_SET.items():
        os.environ[k] = v
    for k in _ENV_UNSET:
        os.environ.pop(k, None)
    # What only exec(2) would have set: the umask of the launch (a waiting
    # sandbox has the daemon's), sys.orig_argv, the process's argv and env.
    if "umask" in claim:
        os.umask(claim["umask"])
    with open("/proc/self/cmdline", "rb") as f:
        full = [os.fsdecode(f.read().split(b"\0")[0])] + list(claim["argv"])  # the interpreter as exec'd
    if hasattr(sys, "orig_argv"):  # Python >= 3.10
        sys.orig_argv = full
    _keep = _look_cold(full, claim["env"])  # noqa: F841  (its buffer, if any, lives as long as this frame)
    # Traits whose defaults ipykernel reads from the environment when it is
    # imported (IPKernelApp.parent_handle: JPY_PARENT_PID, which the launcher
    # sets to 1): read again now, as a cold start would have read them.
    app = ipykernel.kernelapp.IPKernelApp
    app.parent_handle.default_value = int(os.environ.get("JPY_PARENT_PID") or 0)
    app.interrupt.default_value = int(os.environ.get("JPY_INTERRUPT_EVENT") or 0)
    try:
        os.chdir(claim["cwd"])
    except OSError:
        os.chdir(os.environ.get("HOME", "/"))
    argv = claim["argv"]
    if len(argv) >= 2 and argv[0] == "-m":
        sys.argv = [argv[1]] + argv[2:]
        if _PATH0 is not None:
            sys.path.insert(0, os.getcwd())
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv and not argv[0].startswith("-"):
        sys.argv = list(argv)
        if _PATH0 is not None:
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")
    else:
        sys.exit("pool_waiter: unsupported kernel argv %r" % (argv,))


_run(_wait_for_claim())
