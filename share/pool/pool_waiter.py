# The waiting process of an isolated-kernel warm pool sandbox (docs/pool.md).
# Run as `python3 -c <this source> PRELOAD...` inside a sandbox built from
# the kernelspec's plan: imports what a kernel start would import, then waits
# for its one claim on /run/isolated-kernel/pool-0 (only the helper that
# built this sandbox reaches it, through the sandbox's root descriptor).
# The claim is one JSON object: {"argv": [...], "env": {...}, "cwd": "..."},
# the kernelspec argv after the interpreter, e.g. ["-m", "ipykernel_launcher",
# "-f", "/path/kernel-x.json"]; it is run as `python3 ARGV` would run it.
import gc
import importlib
import json
import os
import runpy
import socket
import sys

import ipykernel.kernelapp  # noqa: F401  the ~0.5 s that a cold start spends
import ipykernel.ipkernel  # noqa: F401

for _name in sys.argv[1:]:
    importlib.import_module(_name)

# What the imports built lives as long as the kernel: out of the cyclic
# collector's reach, no collection of the kernel's life and none of the
# interpreter's exit walks it again (~100 ms of CPU at every kernel's exit,
# the most of a shutdown; docs/pool.md "Shutdown"). Objects made after the
# claim (the kernel's and the user's) are collected as in a cold kernel.
gc.freeze()

_PATH = "/run/isolated-kernel/pool-0"


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
        conn.sendall(b"ok\n")
    return json.loads(data)


def _run(claim):
    os.environ.clear()
    os.environ.update(claim["env"])
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
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv and not argv[0].startswith("-"):
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")
    else:
        sys.exit("pool_waiter: unsupported kernel argv %r" % (argv,))


_run(_wait_for_claim())
