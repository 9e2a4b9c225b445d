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


def _run(claim):
    os.environ.clear()
    os.environ.update(claim["env"])
    for k, v in _ENV_SET.items():
        os.environ[k] = v
    for k in _ENV_UNSET:
        os.environ.pop(k, None)
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
