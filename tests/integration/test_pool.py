"""Warm pool (docs/pool.md): `isolated-kernel pool`, pooled kernelspecs,
claims from the launcher, fallbacks. Real daemons, real sandboxes, real
ipykernel kernels driven by jupyter_client, as root and as the test user.

Each test gets its own XDG_RUNTIME_DIR (so its own daemon) and its own
pooled kernelspec (size 1, launcher with -v so its stderr says whether it
claimed a waiting sandbox or started cold).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kit.common import PYTHON, install_pool_waiter, kill_quietly, processes_matching, wait_until
from kit.kernel import (IkSession, _make_host, default_launcher, eval_json, new_connection_file, run_cell,
                        scenario, scenario_main, step)

POOL_KERNEL = "isolated-pool"
COLD_KERNEL = "isolated-cold"  # the same kernelspec without a pool
BROKEN_KERNEL = "isolated-broken"  # pooled, but its waiters cannot start (a preload that does not exist)
WAITER_MARK = "isolated-kernel warm pool"  # in the waiter's -c source, so in its command line


@pytest.fixture(scope="session")
def pool_session(ik_session):
    """ik_session plus isolated-kernel next to the launcher and the waiter in ../share/pool."""
    bindir = ik_session.root / "poolbin"
    if not bindir.exists():
        bindir.mkdir(mode=0o755)
        build = default_launcher().parent
        for prog in ("isolated-kernel-launcher", "isolated-kernel"):
            shutil.copy2(build / prog, bindir / prog)
            (bindir / prog).chmod(0o755)
        install_pool_waiter(ik_session.root)
    return IkSession(ik_session.root, bindir / "isolated-kernel-launcher", ik_session.jupyter_path,
                     ik_session.scripts, ik_session.test_user)


class PoolHost:
    def __init__(self, h):
        self.h = h
        self.ik = h.launcher.parent / "isolated-kernel"
        # short: a unix socket address holds at most 107 bytes
        self.xdg = h.chown(Path(tempfile.mkdtemp(prefix="ikp-", dir="/tmp")))
        self.jupyter = h.mkdir(h.base / "jupyter")
        h.mkdir(self.jupyter / "kernels")
        self.spec_dir = h.mkdir(self.jupyter / "kernels" / POOL_KERNEL)
        self.write_spec({"mounts": ["."], "pool": 1})

    def write_spec(self, settings: dict, spec_dir: Path | None = None):
        spec = {"argv": [str(self.h.launcher), "--kernelspec", "{resource_dir}", "-v", "--", PYTHON, "-m",
                         "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "pooled", "language": "python", "interrupt_mode": "signal",
                "metadata": {"isolated_kernel": settings}}
        self.h.write((spec_dir or self.spec_dir) / "kernel.json", json.dumps(spec, indent=1))

    def env(self, extra=None) -> dict:
        e = {"XDG_RUNTIME_DIR": str(self.xdg), "JUPYTER_PATH": str(self.jupyter), "IK_POOL_BIN": str(self.ik)}
        e.update(extra or {})
        return e

    def ik_run(self, *args, env=None):
        return self.h.run([self.ik, *args], env=self.env(env), timeout=60)

    def scenario(self, name, **args):
        # refills run at nice 19 (docs/pool.md): on a busy machine a fill takes a while
        return self.h.scenario(__file__, name, env=self.env(), timeout=1800, **args)

    def markers(self):
        return [str(self.h.base), str(self.h.launcher.parent)]


@pytest.fixture(params=["root", "user"])
def ph(request, pool_session):
    h = _make_host(request, pool_session, request.param)
    p = PoolHost(h)
    yield p
    p.ik_run("pool", "stop")
    left = wait_until(lambda: not processes_matching(p.markers()), 10) or processes_matching(p.markers())
    kill_quietly(pid for pid, _ in processes_matching(p.markers()))
    h.close()
    shutil.rmtree(p.xdg, ignore_errors=True)
    assert not processes_matching(p.markers()), f"left behind: {left}"


# ----------------------------------------------------------- client side

def _ik(*args) -> dict:
    r = subprocess.run([os.environ["IK_POOL_BIN"], *args], capture_output=True, text=True, timeout=60)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}


def _status() -> dict:
    r = _ik("pool", "status", "--json")
    return json.loads(r["out"]) if r["rc"] == 0 else {}


def _ready() -> int:
    return sum(p.get("ready", 0) for p in _status().get("pools", []))


def _wait_ready(timeout=600) -> bool:  # long: refills run at nice 19, slow on a busy machine
    if wait_until(lambda: _ready() >= 1, timeout, 0.2):
        return True
    log = Path(os.environ["XDG_RUNTIME_DIR"]) / "isolated-kernel" / "pool.log"
    print("pool not ready:", json.dumps(_status()), "\n--- pool.log\n", log.read_text()[-3000:] if log.exists() else "",
          file=sys.stderr)
    return False


def _start(cwd: str, log: Path, kernel_name: str = POOL_KERNEL):
    from jupyter_client.manager import KernelManager
    km = KernelManager(kernel_name=kernel_name, connection_file=new_connection_file(), shutdown_wait_time=20)
    f = open(log, "w")
    km.start_kernel(cwd=cwd, stderr=f)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def _stop(km, kc):
    with contextlib.suppress(Exception):
        kc.stop_channels()
    km.shutdown_kernel(now=False)


def _claimed(log: Path) -> str:
    text = log.read_text()
    if "pool: claimed" in text:
        return "claimed"
    return "cold: " + "".join(l for l in text.splitlines(True) if "pool:" in l)



def _fill(cwd: str, log: Path) -> bool:
    """Starts the daemon, registers the pooled kernelspec with one launch (cold
    unless `pool start`'s scan filled it already) and waits for a ready sandbox."""
    _ik("pool", "start")
    km, kc = _start(cwd, log)
    _stop(km, kc)
    return _wait_ready()

PROBE = r"""
import os, socket, json
def ls(d):
    try: return sorted(os.listdir(d))
    except OSError as e: return str(e)
print(json.dumps({"cwd": os.getcwd(), "cwd_ls": ls("."), "home": ls(os.environ["HOME"]), "tmp": ls("/tmp"),
                  "shm": ls("/dev/shm"), "host": socket.gethostname(), "uid": os.getuid(), "pid": os.getpid(),
                  "env_edit": os.environ.get("IK_EDITED")}))
"""

WRITE = r"""
import os
for p in (os.environ["HOME"] + "/from-first", "/tmp/from-first", "/dev/shm/from-first", "from-first"):
    open(p, "w").write("x")
"""


@scenario
def two_kernels(out, cwd_a, cwd_b, logdir):
    logdir = Path(logdir)
    with step(out, "start") as s:
        s["start"] = _ik("pool", "start")
        km, kc = _start(cwd_a, logdir / "prime.log")  # registers the kernelspec: cold, then the pool fills
        s["prime"] = _claimed(logdir / "prime.log")
        s["status_after_prime"] = _status()
        _stop(km, kc)
        s["ready"] = _wait_ready()
    with step(out, "first") as s:
        km, kc = _start(cwd_a, logdir / "a.log")
        s["how"] = _claimed(logdir / "a.log")
        s["key"] = km.session.key.decode()
        s["probe"] = json.loads(run_cell(kc, PROBE)["stdout"])
        s["write"] = run_cell(kc, WRITE)["reply"]["status"]
        # interrupt: one KeyboardInterrupt, the kernel lives on. stop_on_error=False:
        # else ipykernel aborts a request arriving before its next loop turn after
        # the error (its stop_on_error window; a plain kernel too): "print(6*7)" below
        # then flakes as "aborted" with no stdout under load.
        mid = kc.execute("import time; time.sleep(30)", stop_on_error=False)
        time.sleep(1.5)
        km.interrupt_kernel()
        r = kc.get_shell_msg(timeout=20)
        while r["parent_header"].get("msg_id") != mid:
            r = kc.get_shell_msg(timeout=20)
        s["interrupt"] = r["content"].get("ename")
        while True:  # that cell's iopub, up to its idle
            m = kc.get_iopub_msg(timeout=20)
            if (m["parent_header"].get("msg_id") == mid and m["msg_type"] == "status"
                    and m["content"]["execution_state"] == "idle"):
                break
        s["after_interrupt_cell"] = run_cell(kc, "print(6*7)")
        s["after_interrupt"] = s["after_interrupt_cell"]["stdout"].strip()
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=60)
        s["after_restart"] = run_cell(kc, "print('x' in dir())")["stdout"].strip()
        _stop(km, kc)
        s["ready_again"] = _wait_ready()
    with step(out, "second") as s:
        km, kc = _start(cwd_b, logdir / "b.log")
        s["how"] = _claimed(logdir / "b.log")
        s["key"] = km.session.key.decode()
        s["probe"] = json.loads(run_cell(kc, PROBE)["stdout"])
        # the claiming launcher only follows the kernel: it never needs libcrypto (bench/analysis.md 7c)
        maps = Path(f"/proc/{km.provisioner.process.pid}/maps").read_text()
        s["launcher_libs"] = sorted({l.split()[-1] for l in maps.splitlines() if ".so" in l})
        _stop(km, kc)
    out["status"] = _status()


@scenario
def stale(out, cwd, logdir, spec_file):
    logdir = Path(logdir)
    with step(out, "fill") as s:
        s["ready"] = _fill(cwd, logdir / "prime.log")
    with step(out, "edited") as s:
        spec = json.loads(Path(spec_file).read_text())
        spec["metadata"]["isolated_kernel"]["setenv"] = {"IK_EDITED": "yes"}
        Path(spec_file).write_text(json.dumps(spec))
        km, kc = _start(cwd, logdir / "edited.log")
        s["how"] = _claimed(logdir / "edited.log")
        s["probe"] = json.loads(run_cell(kc, PROBE)["stdout"])
        _stop(km, kc)
        s["discarded"] = sum(p.get("discarded", 0) for p in _status().get("pools", []))


def _pool_of(kernel: str) -> dict:
    """The status of the pool of kernelspec KERNEL (its directory is in the spec), {} when none."""
    return next((p for p in _status().get("pools", []) if any(a.endswith("/" + kernel) for a in p["spec"])), {})


@scenario
def broken_pool(out, cwd, logdir):
    logdir = Path(logdir)
    with step(out, "start") as s:
        _ik("pool", "start")  # its scan fills both pooled kernelspecs
        s["good_ready"] = bool(wait_until(lambda: _pool_of(POOL_KERNEL).get("ready", 0) >= 1, 600, 0.2))
        wait_until(lambda: "refills stopped" in _pool_of(BROKEN_KERNEL).get("held_back", ""), 600, 0.2)
        s["broken"] = _pool_of(BROKEN_KERNEL)
        time.sleep(3)  # and no more tries behind our back
        s["broken_later"] = _pool_of(BROKEN_KERNEL)
    with step(out, "good") as s:
        # The good pool's waiting sandbox dies: it is replaced, the broken
        # pool's failures notwithstanding.
        waiter = _pool_of(POOL_KERNEL)["waiting"][0]["program_pid"]
        os.kill(waiter, signal.SIGKILL)
        s["refilled"] = bool(wait_until(lambda: [w for w in _pool_of(POOL_KERNEL).get("waiting", [])
                                                 if w["program_pid"] != waiter and _alive(w["program_pid"])], 600, 0.2))
        # and its kernel has what the kernelspec preloads (pool_preload) imported already
        km, kc = _start(cwd, logdir / "g.log")
        s["how"] = _claimed(logdir / "g.log")
        s["preloaded"] = run_cell(kc, "import sys; print('colorsys' in sys.modules)")["stdout"].strip()
        # what a preloaded module saw of the environment at its import (matplotlib reads MPLBACKEND then)
        s["seen_mplbackend"] = run_cell(kc, "import ik_env_probe; print(ik_env_probe.MPLBACKEND)")["stdout"].strip()
        _stop(km, kc)
    with step(out, "launch") as s:
        # A launch of the broken kernelspec starts cold (works) and its pool tries once more.
        km, kc = _start(cwd, logdir / "b.log", kernel_name=BROKEN_KERNEL)
        s["how"] = _claimed(logdir / "b.log")
        s["works"] = run_cell(kc, "print(3 + 3)")["stdout"].strip()
        _stop(km, kc)
        wait_until(lambda: _pool_of(BROKEN_KERNEL).get("failed", 0) >= 4, 600, 0.2)
        time.sleep(3)
        s["after"] = _pool_of(BROKEN_KERNEL)


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _port_open(km) -> bool:
    with socket.socket() as s:
        return s.connect_ex((km.ip, km.shell_port)) == 0


@scenario
def kill9(out, cwd, logdir):
    logdir = Path(logdir)
    _fill(cwd, logdir / "prime.log")
    with step(out, "launcher") as s:
        km, kc = _start(cwd, logdir / "l.log")
        s["how"] = _claimed(logdir / "l.log")
        kernel = int(re.search(r"kernel pid (\d+)", (logdir / "l.log").read_text()).group(1))
        chain = [kernel, _ppid(kernel), _ppid(_ppid(kernel))]  # kernel, sandbox init, helper
        s["chain_alive"] = all(_alive(p) for p in chain)
        kc.stop_channels()
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        km.provisioner.process.wait()
        s["relay_gone"] = bool(wait_until(lambda: not _port_open(km), 5, 0.1))
        # the kernel, its sandbox and its helper are gone within the 1 s grace (+ slack)
        s["chain_gone"] = bool(wait_until(lambda: not any(_alive(p) for p in chain), 5, 0.1))
        km.cleanup_resources()
    with step(out, "waiter") as s:
        # Ready waiters killed three times in a row: each is replaced, and the
        # deaths do not count as failing helpers (three of those stop refills).
        # Only live waiters not killed before count: the daemon lists a killed
        # one until its helper has told it, so the status lags the kill.
        killed: set[int] = set()

        def fresh() -> list[int]:  # our daemon's waiters only: other pools may run on this machine
            return [w["program_pid"] for p in _status().get("pools", []) for w in p.get("waiting", [])
                    if w["program_pid"] not in killed and _alive(w["program_pid"])]

        s["refilled"], s["marked"] = [], True
        for _ in range(3):
            waiters = wait_until(fresh, 600, 0.2) or []
            s["refilled"].append(bool(waiters))
            s["waiters"] = len(waiters)
            for p in waiters:
                with contextlib.suppress(OSError):  # gone already: its helper ended it (fine)
                    s["marked"] &= WAITER_MARK in Path(f"/proc/{p}/cmdline").read_text()
                    os.kill(p, signal.SIGKILL)
                killed.add(p)
        s["refilled_after_kills"] = bool(wait_until(fresh, 120, 0.2))
        km, kc = _start(cwd, logdir / "w.log")  # a claim racing the refill: claimed or cold, never broken
        s["works"] = run_cell(kc, "print(1+1)")["stdout"].strip()
        _stop(km, kc)
    with step(out, "daemon") as s:
        _wait_ready()
        st = _status()
        pid = st["pid"]
        ours = [w for p in st["pools"] for w in p["waiting"]]
        s["waiting"] = len(ours)
        os.kill(pid, signal.SIGKILL)
        s["helpers_gone"] = bool(wait_until(lambda: not any(_alive(w["helper_pid"]) for w in ours), 10, 0.2))
        s["waiters_gone"] = bool(wait_until(lambda: not any(_alive(w["program_pid"]) for w in ours), 10, 0.2))
        km, kc = _start(cwd, logdir / "d.log")  # no daemon: cold, and a new daemon starts on demand
        s["how"] = _claimed(logdir / "d.log")
        s["works"] = run_cell(kc, "print(2+2)")["stdout"].strip()
        _stop(km, kc)


@scenario
def claim_races_stop(out, cwd, logdir):
    import threading
    logdir = Path(logdir)
    out["runs"] = []
    for i in range(3):
        _fill(cwd, logdir / f"prime{i}.log")  # (re)registers the kernelspec
        stopper = threading.Timer(0.02 * i, lambda: _ik("pool", "stop"))
        stopper.start()
        r = {}
        with step(r, "start") as s:
            km, kc = _start(cwd, logdir / f"race{i}.log")
            s["how"] = _claimed(logdir / f"race{i}.log")
            s["works"] = run_cell(kc, "print(3*3)")["stdout"].strip()
            _stop(km, kc)
        stopper.join()
        out["runs"].append(r)
    out["daemon_running"] = _status().get("running", False)


# What a kernel can see of its start (issue 12: a pooled kernel must not be
# able to tell that it was pooled, except by its speed). Run as the first
# cell of a cold and of a pooled kernel of the same kernelspec; values that
# name this launch's connection file are normalised to {cf}.
VIEW = r"""
import json, os, re, resource, signal, sys, threading
_ip = get_ipython()
_cf = _ip.kernel.parent.connection_file if _ip.kernel.parent is not None else ""
def _n(v):
    if isinstance(v, str):
        v = v.replace(_cf, "{cf}") if _cf else v
        return re.sub(r" at 0x[0-9a-f]+", "", v)
    if isinstance(v, dict):
        return {_n(k): _n(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_n(x) for x in v]
    return v if v is None or isinstance(v, (int, float, bool)) else _n(str(v))
def _fd(fd):
    try:
        t = os.readlink("/proc/self/fd/" + fd)
    except OSError as e:
        return str(e)
    return re.sub(r"\[\d+\]$", "[]", t)
_status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
print(json.dumps(_n({
    "argv": sys.argv, "path": sys.path, "cwd": os.getcwd(), "env": dict(os.environ),
    "ids": [os.getpid(), os.getppid(), os.getpgrp(), os.getsid(0), os.getuid(), os.geteuid(), os.getgid(),
            os.getegid(), sorted(os.getgroups())],
    "umask": os.umask(0o22), "nice": os.nice(0),
    "rlimits": {n: resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_")},
    "signals": {s.name: repr(signal.getsignal(s)) for s in signal.Signals
                if s not in (signal.SIGKILL, signal.SIGSTOP)},
    "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "status": {k: _status[k].strip() for k in ("NSpid", "NStgid", "Uid", "Gid", "CapInh", "CapPrm", "CapEff",
                                                 "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Threads")
               if k in _status},
    # Which number each fd got, and how many eventfd/epoll descriptors zmq's
    # inproc event pipes hold, depend on the kernel's threads' timing, cold or
    # not; every other descriptor counts. (The listing's own fd is gone by
    # the time it is read: left out.)
    "fds": sorted(t for t in map(_fd, os.listdir("/proc/self/fd"))
                  if not t.startswith("[Errno") and t not in ("anon_inode:[eventfd]", "anon_inode:[eventpoll]")
                  and not t.endswith("-journal")),
    "threads": sorted(t.name for t in threading.enumerate()),
    "modules": sorted(sys.modules),
    "main": [sys.modules["__main__"].__name__, type(sys.modules["__main__"]).__name__],
    "hooks": [type(sys.stdout).__name__, type(sys.stderr).__name__, type(sys.stdin).__name__,
              repr(sys.displayhook), repr(sys.excepthook)],
    "flags": repr(sys.flags), "executable": sys.executable, "prefix": [sys.prefix, sys.exec_prefix],
    "user_ns": sorted(_ip.user_ns), "dh": _ip.user_ns.get("_dh"), "execution_count": _ip.execution_count,
    "history": [list(h) for h in _ip.history_manager.get_range(output=False)],
    "hist_file": str(_ip.history_manager.hist_file), "session": _ip.history_manager.session_number,
    "ipython_dir": _ip.ipython_dir, "profile_dir": _ip.profile_dir.location,
    "config": repr(sorted(_ip.config.keys())), "kernel_config": repr(sorted(_ip.kernel.config.keys())),
    "magics": sorted(_ip.magics_manager.lsmagic()["line"]) + sorted(_ip.magics_manager.lsmagic()["cell"]),
    "home": sorted(os.listdir(os.environ.get("HOME", "/"))),
    # history.sqlite-journal exists (and is open) only while IPython's history
    # thread writes: timing, cold or not.
    "ipython_tree": sorted(str(p) for p in __import__("pathlib").Path(_ip.ipython_dir).rglob("*")
                           if not str(p).endswith("-journal")),
    "tmp": sorted(os.listdir("/tmp")), "run": sorted(os.listdir("/run")),
    "cwd_ls": sorted(os.listdir(".")),
})))
"""


@scenario
def same_view(out, cwd, logdir):
    logdir = Path(logdir)
    with step(out, "cold") as s:
        km, kc = _start(cwd, logdir / "cold.log", COLD_KERNEL)
        s["how"] = _claimed(logdir / "cold.log")
        s["view"] = eval_json(kc, VIEW)
        _stop(km, kc)
    with step(out, "pooled") as s:
        s["ready"] = _fill(cwd, logdir / "prime.log")
        km, kc = _start(cwd, logdir / "pooled.log")
        s["how"] = _claimed(logdir / "pooled.log")
        s["view"] = eval_json(kc, VIEW)
        _stop(km, kc)



SHADOW = """# a module of the working directory that shadows one ipykernel imports
import importlib.util, os, sys
for _d in sys.path[1:]:
    _spec = importlib.util.spec_from_file_location("decorator", os.path.join(_d or ".", "decorator.py"))
    if _d != os.getcwd() and os.path.exists(_spec.origin):
        _real = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(_real)
        globals().update({k: v for k, v in vars(_real).items() if not k.startswith("__")})
        break
SHADOWED_BY_THE_WORKING_DIRECTORY = True
"""


@scenario
def shadowed(out, cwd, logdir):
    logdir = Path(logdir)
    with step(out, "start") as s:
        s["ready"] = _fill(cwd, logdir / "prime.log")
    with step(out, "shadowed") as s:
        Path(cwd, "decorator.py").write_text(SHADOW)
        km, kc = _start(cwd, logdir / "shadowed.log")
        s["how"] = _claimed(logdir / "shadowed.log")
        s["module"] = eval_json(kc, "import sys, json; m = sys.modules['decorator']; "
                                    "print(json.dumps([m.__file__, hasattr(m, 'SHADOWED_BY_THE_WORKING_DIRECTORY')]))")
        _stop(km, kc)
        Path(cwd, "decorator.py").unlink()
        s["status"] = _status()


# What a kernel could see of work done for it before the claim: the IPython
# profile (HOME is the sandbox's own empty tmpfs, so every kernel makes
# ~/.ipython/profile_default, its startup README and history.sqlite in
# IPKernelApp.initialize). Made by the waiter at the fill, their inode times
# would be the fill's (ctime cannot be set back): bench/analysis.md 7b.
PROFILE_TIMES = r"""
import os, json
_ip = get_ipython()
_pd = _ip.profile_dir.location
_paths = [_ip.ipython_dir, _pd, os.path.join(_pd, "startup"), os.path.join(_pd, "startup", "README"),
          os.path.join(_pd, "security"), str(_ip.history_manager.hist_file)]
print(json.dumps({p: os.stat(p).st_ctime for p in _paths if os.path.exists(p)}))
"""


@scenario
def profile_times(out, cwd, logdir):
    logdir = Path(logdir)
    with step(out, "cold") as s:
        s["t0"] = time.time()
        km, kc = _start(cwd, logdir / "cold.log", COLD_KERNEL)
        s["how"] = _claimed(logdir / "cold.log")
        s["times"] = eval_json(kc, PROFILE_TIMES)
        _stop(km, kc)
    with step(out, "pooled") as s:
        _ik("pool", "start")
        km, kc = _start(cwd, logdir / "prime.log")
        _stop(km, kc)
        s["ready"] = _wait_ready()
        time.sleep(1.0)  # a fill's timestamps are then >= 1 s before t0
        s["t0"] = time.time()
        km, kc = _start(cwd, logdir / "pooled.log")
        s["how"] = _claimed(logdir / "pooled.log")
        s["times"] = eval_json(kc, PROFILE_TIMES)
        _stop(km, kc)


def _ok(res, *steps):
    for st in steps:
        assert "error" not in res[st], res.context() if hasattr(res, "context") else res[st]


def test_pooled_kernels_work_and_see_nothing_of_each_other(ph):
    h = ph.h
    a = h.mkdir(h.base / "a")
    b = h.mkdir(h.base / "b")
    logs = h.mkdir(h.base / "logs")
    res = ph.scenario("two_kernels", cwd_a=str(a), cwd_b=str(b), logdir=str(logs))
    _ok(res, "start", "first", "second")
    assert res["start"]["start"]["rc"] == 0, res["start"]
    assert res["start"]["prime"].startswith("cold"), res["start"]
    assert res["start"]["ready"], (res["start"], res.context())
    first, second = res["first"], res["second"]
    assert first["how"] == "claimed", first
    assert second["how"] == "claimed", second
    # the claiming launcher bound the host ports first thing and the helper's
    # relay took all five (relay/prebound.hpp)
    assert "pool: relaying on 5 of the 5 host ports" in (logs / "b.log").read_text()
    # the pooled kernel's view is the cold one's
    assert first["probe"]["cwd"] == str(a)
    assert first["probe"]["host"] == "isolated" and first["probe"]["pid"] == 2
    assert first["probe"]["uid"] == h.uid
    assert first["write"] == "ok"
    assert first["interrupt"] == "KeyboardInterrupt"
    assert first["after_interrupt"] == "42", first
    assert first["after_restart"] == "False"
    # nothing of the first kernel reaches the second
    p = second["probe"]
    assert p["cwd"] == str(b) and "from-first" not in p["cwd_ls"]
    for where in ("home", "tmp", "shm"):
        assert "from-first" not in p[where], (where, p)
    assert first["key"] != second["key"]
    assert second["launcher_libs"] and not any("libcrypto" in l for l in second["launcher_libs"]), second
    assert (a / "from-first").exists()  # the first kernel's cwd was the host's directory
    pools = res["status"]["pools"]
    assert pools and pools[0]["claimed"] >= 2


def test_kernelspec_edited_after_fill_is_never_claimed(ph):
    h = ph.h
    logs = h.mkdir(h.base / "logs")
    res = ph.scenario("stale", cwd=str(h.workdir), logdir=str(logs), spec_file=str(ph.spec_dir / "kernel.json"))
    _ok(res, "fill", "edited")
    assert res["fill"]["ready"]
    assert res["edited"]["how"].startswith("cold"), res["edited"]
    assert res["edited"]["probe"]["env_edit"] == "yes"
    assert res["edited"]["discarded"] >= 1


def test_kill9_launcher_waiter_daemon_leave_nothing(ph):
    h = ph.h
    logs = h.mkdir(h.base / "logs")
    res = ph.scenario("kill9", cwd=str(h.workdir), logdir=str(logs))
    _ok(res, "launcher", "waiter", "daemon")
    assert res["launcher"]["how"] == "claimed", res["launcher"]
    assert res["launcher"]["chain_alive"], res["launcher"]
    assert res["launcher"]["relay_gone"] and res["launcher"]["chain_gone"], res["launcher"]
    assert res["waiter"]["waiters"] >= 1 and res["waiter"]["marked"] and res["waiter"]["works"] == "2"
    assert res["waiter"]["refilled"] == [True] * 3 and res["waiter"]["refilled_after_kills"], res["waiter"]
    assert res["daemon"]["waiting"] >= 1, res["daemon"]
    assert res["daemon"]["helpers_gone"] and res["daemon"]["waiters_gone"], res["daemon"]
    assert res["daemon"]["how"].startswith("cold") and res["daemon"]["works"] == "4", res["daemon"]


def test_a_broken_pooled_kernelspec_stops_only_its_own_refills(ph):
    """A pooled kernelspec whose waiting sandboxes cannot start (a preload
    module that does not exist): after three failures in a row its pool stops
    refilling and `pool status` says why; the other pools keep refilling
    (the count was the daemon's, so one broken kernelspec stopped every
    pool's refills for good); a launch of it starts cold and its pool tries
    once more. And a good pool's kernels have its pool_preload imported."""
    h = ph.h
    mods = h.mkdir(h.base / "mods")  # a module that records MPLBACKEND at its import
    h.write(mods / "ik_env_probe.py", "import os\nMPLBACKEND = os.environ.get('MPLBACKEND')\n")
    ph.write_spec({"mounts": [".", f"ro:{mods}"], "setenv": {"PYTHONPATH": str(mods)}, "pool": 1,
                   "pool_preload": ["colorsys", "ik_env_probe"]})
    # a pool of 2: after a failure one sandbox at a time, so a launch costs one failed start, not two
    ph.write_spec({"mounts": ["."], "pool": 2, "pool_preload": ["ik_no_such_module"]},
                  h.mkdir(ph.jupyter / "kernels" / BROKEN_KERNEL))
    logs = h.mkdir(h.base / "logs")
    res = ph.scenario("broken_pool", cwd=str(h.workdir), logdir=str(logs))
    _ok(res, "start", "good", "launch")
    start = res["start"]
    assert start["good_ready"], res.context()
    b = start["broken"]
    assert b["failed"] == 3 and b["ready"] == 0 and b["starting"] == 0, b
    assert "refills stopped: the last 3 waiting sandboxes failed to start" in b["held_back"], b
    assert "ik_no_such_module" in b["last_error"], b
    assert start["broken_later"]["failed"] == 3 and start["broken_later"]["starting"] == 0, start["broken_later"]
    good = res["good"]
    assert good["refilled"] and good["how"] == "claimed" and good["preloaded"] == "True", (good, res.context())
    # as a cold kernel's user importing it would see it (ipykernel sets it at start)
    assert good["seen_mplbackend"] == "module://matplotlib_inline.backend_inline", good
    launch = res["launch"]
    assert launch["how"].startswith("cold") and launch["works"] == "6", launch
    after = launch["after"]
    assert after["failed"] == 4 and after["starting"] == 0 and "refills stopped" in after["held_back"], after
    text = ph.ik_run("pool", "status").stdout
    assert "failed to start 4" in text and "refills stopped" in text, text


def test_claim_racing_the_daemons_stop_gets_a_working_kernel(ph):
    h = ph.h
    logs = h.mkdir(h.base / "logs")
    res = ph.scenario("claim_races_stop", cwd=str(h.workdir), logdir=str(logs))
    assert "_error" not in res.data, res.context()
    for r in res["runs"]:
        assert "error" not in r["start"] and r["start"]["works"] == "9", r


def _children(pid: int) -> list[int]:
    kids = []
    with contextlib.suppress(OSError):
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids += [int(k) for k in f.read().split()]
    return kids


def test_stop_during_a_fill_returns_when_nothing_is_left(ph):
    # `pool start` fills the installed pooled kernelspec at once (pool/prescan.cpp);
    # stopping while the helper is still setting up (its sandbox exists, its
    # waiter is importing at nice 19) must not return before the helper, its
    # sandbox's init and the waiter are gone: no settle time after `pool stop`.
    assert ph.ik_run("pool", "start").returncode == 0
    found = {}

    def setting_up():
        for pid, cmd in processes_matching(ph.markers()):
            inits = _children(pid) if "--pool-helper" in cmd else []
            if inits:
                found.update(helper=pid, init=inits[0], waiters=_children(inits[0]))
                return bool(found["waiters"])
        return False

    assert wait_until(setting_up, 600), "no helper with a sandbox appeared"
    r = ph.ik_run("pool", "stop")
    assert r.returncode == 0 and "stopped" in r.stdout, r
    left = [p for p in (found["helper"], found["init"], *found["waiters"]) if _alive(p)]
    assert not left, f"alive right after `pool stop` returned: {left} (found {found})"
    assert not processes_matching(ph.markers())


def test_a_second_stop_waits_for_the_stop_under_way(ph):
    """`pool stop` while another one is under way: the daemon has closed its
    socket and is ending its waiting sandboxes (a helper that does not go:
    stopped here, SIGKILLed after the 3 s grace). Used to say "no pool daemon
    runs" and exit 1; it waits for the same stop and exits 0 once the daemon
    is gone."""
    import threading
    assert ph.ik_run("pool", "start").returncode == 0
    daemon = json.loads(ph.ik_run("pool", "status", "--json").stdout)["pid"]
    helpers = wait_until(lambda: [pid for pid, cmd in processes_matching(ph.markers()) if "--pool-helper" in cmd], 600)
    assert helpers, "no helper appeared"
    os.kill(helpers[0], signal.SIGSTOP)
    first = []
    t = threading.Thread(target=lambda: first.append(ph.ik_run("pool", "stop")))
    t.start()
    sock = ph.xdg / "isolated-kernel" / "pool.sock"
    assert wait_until(lambda: not sock.exists(), 30, 0.01), "the first stop did not start"
    assert _alive(daemon), "the daemon was gone before the second stop: nothing tested"
    second = ph.ik_run("pool", "stop")
    daemon_alive = _alive(daemon)
    t.join()
    assert second.returncode == 0 and "pool daemon stopped" in second.stdout, second
    assert "stopping already" in second.stderr and second.stderr.count("\n") == 1, second
    assert not daemon_alive, "the second stop returned before the daemon was gone"
    assert first[0].returncode == 0, first[0]
    # and with no daemon at all, still one clear line and exit 1
    r = ph.ik_run("pool", "stop")
    assert r.returncode == 1 and "no pool daemon runs" in r.stderr and r.stderr.count("\n") == 1, r


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _lowest_free_fd(pid: int) -> int:
    fds = {int(f) for f in os.listdir(f"/proc/{pid}/fd")}
    return min(set(range(max(fds) + 2)) - fds)


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for f in os.listdir(f"/proc/{pid}/fd"):
        m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{f}"))
        if m:
            out.add(m.group(1))
    return out


def _fds_of_entry(daemon: int, helper: int) -> list[int]:
    """The daemon's descriptors that a waiting sandbox's end frees: its end of
    the helper's socket, and pidfds of the helper or the sandbox if it holds any."""
    pids = {str(helper)} | {str(p) for p in map(int, Path(f"/proc/{helper}/task/{helper}/children").read_text().split())}
    peers = {}
    for line in subprocess.run(["ss", "-xanH"], capture_output=True, text=True, check=True).stdout.splitlines():
        f = line.split()
        peers[f[-3]] = f[-1]
    helper_socks = _socket_inodes(helper)
    fds = []
    for f in os.listdir(f"/proc/{daemon}/fd"):
        target = os.readlink(f"/proc/{daemon}/fd/{f}")
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m and peers.get(m.group(1)) in helper_socks:
            fds.append(int(f))
        elif target == "anon_inode:[pidfd]":
            pid = re.search(r"^Pid:\s*(-?\d+)", Path(f"/proc/{daemon}/fdinfo/{f}").read_text(), re.M)
            if pid and pid.group(1) in pids:
                fds.append(int(f))
    return fds


def test_a_refill_that_cannot_start_says_why_and_does_not_spin(ph):
    """The daemon out of descriptors when a waiting sandbox dies: its refill
    cannot make the helper's socketpair. Used to be silent (`pool status`
    said only "helper ended", pool.log nothing); now both say what failed,
    and the daemon waits for the next event rather than retry in a loop. A
    client connecting meanwhile waits until descriptors free (the daemon
    used to spin on the connection it could not accept)."""
    assert ph.ik_run("pool", "start").returncode == 0  # fills the installed pooled kernelspec

    def status():
        r = ph.ik_run("pool", "status", "--json")
        return json.loads(r.stdout) if r.returncode == 0 else {}

    ready = wait_until(lambda: [w for p in status().get("pools", []) for w in p["waiting"]], 600, 0.2)
    assert ready, status()
    daemon = status()["pid"]
    old = re.search(r"^Max open files\s+(\d+)\s+(\d+)", Path(f"/proc/{daemon}/limits").read_text(), re.M).groups()

    def limit(soft):  # as the daemon's user: its uid may (root here may lack CAP_SYS_RESOURCE)
        r = ph.h.run(["prlimit", f"--pid={daemon}", f"--nofile={soft}:{old[1]}"])
        assert r.returncode == 0, r

    # At most one descriptor number usable once the dead sandbox's are
    # closed: the limit sits just above the lowest of them (all below it are
    # in use), so neither a connection the daemon closes late (the status
    # calls above) nor another of the entry's frees a second. A socketpair
    # needs two. (The lowest free descriptor as the limit failed 1 in ~8.)
    entry = _fds_of_entry(daemon, ready[0]["helper_pid"])
    assert entry and min(entry) < _lowest_free_fd(daemon), entry
    limit(min(entry) + 1)
    log = ph.xdg / "isolated-kernel" / "pool.log"
    client = None
    try:
        os.kill(ready[0]["program_pid"], signal.SIGKILL)
        said = wait_until(lambda: "refill: socketpair" in log.read_text(), 30, 0.1)
        limit(_lowest_free_fd(daemon))  # and now not one: a client's connection cannot be accepted
        client = subprocess.Popen([*ph.h.prefix(), str(ph.ik), "pool", "status", "--json"], env=ph.h.env(ph.env()),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        cpu = _cpu_seconds(daemon)
        time.sleep(2)
        cpu = _cpu_seconds(daemon) - cpu
    finally:
        limit(old[0])
        out = client.communicate(timeout=30) if client else None
    text = log.read_text()
    assert said, text
    line = next(l for l in text.splitlines() if "refill: socketpair" in l)
    assert "Too many open files" in line and "the next launch tries again" in line, text
    assert cpu < 0.5, f"the daemon used {cpu:.2f} s of CPU in 2 s out of descriptors: it spins\n{text}"
    assert "accept: Too many open files: connections wait" in text, text
    assert client.returncode == 0 and json.loads(out[0])["pid"] == daemon, out  # served once they free
    pool = status()["pools"][0]
    assert "refill: socketpair: Too many open files" in pool["last_error"], pool
    assert pool["ready"] == 0 and pool["starting"] == 0, pool  # not retried behind our back


def test_clear_errors(ph):
    r = ph.ik_run("pool", "start")
    assert r.returncode == 0, r
    r = ph.ik_run("pool", "start")
    assert r.returncode == 3 and "already runs for this user" in r.stderr and r.stderr.count("\n") == 1, r
    assert ph.ik_run("pool", "stop").returncode == 0
    d = ph.xdg / "isolated-kernel"
    d.chmod(0o755)
    r = ph.ik_run("pool", "start")
    assert r.returncode == 2 and "lets others in" in r.stderr and f"chmod 700 {d}" in r.stderr, r
    d.chmod(0o700)
    r = ph.ik_run("install", "--user", "--name", "x", "--pool", "lots", "--no-check")
    assert r.returncode == 2 and "--pool" in r.stderr and r.stderr.count("\n") == 1, r


def test_install_pool_is_stored_listed_and_shown(ph):
    h = ph.h
    prefix = h.mkdir(h.base / "prefix")
    r = ph.ik_run("install", "--prefix", str(prefix), "--name", "pooled-x", "--pool", "2", "--no-check")
    assert r.returncode == 0, r
    spec = json.loads((prefix / "share/jupyter/kernels/pooled-x/kernel.json").read_text())
    assert spec["metadata"]["isolated_kernel"]["pool"] == 2
    env = {"JUPYTER_PATH": str(prefix / "share/jupyter")}
    r = ph.ik_run("list", env=env)
    assert r.returncode == 0 and "pool=2" in r.stdout, r
    r = ph.ik_run("show", "pooled-x", env=env)
    assert r.returncode == 0 and '"pool": 2' in r.stdout, r


def _cold_and_pooled(ph, scenario):
    """Runs SCENARIO, which starts one kernel of a cold copy of the pooled
    kernelspec and one pooled kernel in the same working directory; checks
    that the first started cold and the second was claimed."""
    h = ph.h
    ph.write_spec({"mounts": ["."]}, h.mkdir(ph.jupyter / "kernels" / COLD_KERNEL))
    work = h.mkdir(h.base / "work")
    logs = h.mkdir(h.base / "logs")
    res = ph.scenario(scenario, cwd=str(work), logdir=str(logs))
    _ok(res, "cold", "pooled")
    cold, pooled = res["cold"], res["pooled"]
    assert cold["how"].startswith("cold"), cold["how"]
    assert pooled["ready"] and pooled["how"] == "claimed", (pooled["how"], res.context())
    return work, res, cold, pooled


def test_pooled_kernel_sees_what_a_cold_kernel_sees(ph):
    """Issue 12's rule: same argv, env, sys.path, cwd, ids, limits, signal
    handlers, descriptors, threads, modules, shell namespace, history and
    profile as a cold start of the same kernelspec: whatever the waiter
    prepares before the claim (share/pool/pool_waiter.py) must not show."""
    work, res, cold, pooled = _cold_and_pooled(ph, "same_view")
    a, b = cold["view"], pooled["view"]
    # The kernel is the sandbox's process 2, cold or pooled, whether or not
    # set-up made the network on a thread (apply/pid_order.hpp).
    assert a["cwd"] == str(work) and a["argv"][-1] == "{cf}" and a["ids"][0] == 2, a  # the probe saw what it should
    assert a["history"] and a["execution_count"] == 1 and a["modules"], a
    differ = {k: _diff(a[k], b.get(k)) for k in a if a[k] != b.get(k)}
    assert not differ, json.dumps(differ, indent=1)[:20000]


def test_working_directory_shadowing_a_preloaded_module_starts_cold(ph):
    """A cold `python -m ipykernel_launcher` imports a module of its working
    directory before the installed one; the waiter imported the installed
    one before the claim, so it refuses the claim and the kernel starts cold
    and sees the directory's module."""
    h = ph.h
    work = h.mkdir(h.base / "work", 0o777)
    logs = h.mkdir(h.base / "logs")
    res = ph.scenario("shadowed", cwd=str(work), logdir=str(logs))
    _ok(res, "start", "shadowed")
    assert res["start"]["ready"], res.context()
    s = res["shadowed"]
    assert s["module"] == [str(work / "decorator.py"), True], s
    assert s["how"].startswith("cold") and "refused the claim" in s["how"] and "decorator" in s["how"], s["how"]
    assert sum(p.get("refused", 0) for p in s["status"]["pools"]) >= 1, s["status"]


def test_pooled_kernels_profile_is_made_after_the_claim(ph):
    """The IPython profile directory, its startup README and history.sqlite
    are created by the kernel after the claim, as in a cold kernel: nothing
    of the kernel's own initialisation ran in the waiter (a pre-made profile
    would show its fill time in the files' ctime, which a kernel can read)."""
    _, res, cold, pooled = _cold_and_pooled(ph, "profile_times")
    for r in (cold, pooled):
        assert len(r["times"]) == 6, r["times"]  # the probe found every file it looks at
        # 0.05 s: tmpfs stamps inodes with the coarse clock (up to a tick behind time.time())
        early = {p: round(r["t0"] - t, 3) for p, t in r["times"].items() if t < r["t0"] - 0.05}
        assert not early, ("made before the start", early)


def _diff(cold, pooled):
    """What differs, compactly: the differing items of dicts, the items only one side has of lists."""
    if isinstance(cold, dict) and isinstance(pooled, dict):
        return {k: {"cold": cold.get(k), "pooled": pooled.get(k)} for k in sorted(set(cold) | set(pooled))
                if cold.get(k) != pooled.get(k)}
    if isinstance(cold, list) and isinstance(pooled, list):
        from collections import Counter
        a, b = Counter(map(json.dumps, cold)), Counter(map(json.dumps, pooled))
        return {"cold only": sorted((a - b).elements()), "pooled only": sorted((b - a).elements())}
    return {"cold": cold, "pooled": pooled}


if __name__ == "__main__":
    scenario_main()
