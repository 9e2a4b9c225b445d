"""Resource limits: --nofile, --fsize, --memory, --cpu-time, --wall-time,
--nproc, under isolate and in an isolated kernel, as root and as the user.

isolate gets the limit of each test alone; the kernel runner shares one
kernel for nofile/fsize/memory (ipykernel itself needs ~700 MB of address
space, so its memory cap is 1G), and gets fresh kernels for the limits that
kill it (cpu time, wall time).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from kit.common import processes_matching, wait_until

SANDBOX_OPTS: list[str] = []
KERNEL_LIMITS = ["--nofile", "64", "--fsize", "1M", "--memory", "1G"]

# Known weakness, asserted (so a fix turns the test red) and then xfailed in test_nproc_limits_forking:
NPROC_ROOT_BUG = ("BUG: without a cgroup v2 pids controller (hybrid hosts like the development VM), --nproc does "
                  "not bind a root caller: the kernel exempts the host's root user (INIT_USER) from RLIMIT_NPROC, so "
                  "a fork bomb in a sandbox started by root is unbounded (isolate warns; test_cgroup.py shows "
                  "pids.max containing it where the controller is available)")


def opts_for(runner, isolate_opts):
    return isolate_opts if runner.kind == "isolate" else KERNEL_LIMITS


NOFILE = r'''
import resource, subprocess, sys
# Exhaust descriptors in a child (inherits the limit): a kernel whose own
# threads hit EMFILE would break in ways that have nothing to do with the probe.
child = r"""
import os, json, errno
base = len(os.listdir("/proc/self/fd")) - 1
fds, err = [], None
try:
    for i in range(100):
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    err = errno.errorcode[e.errno]
print(json.dumps({"base": base, "opened": len(fds), "err": err}))
"""
p = subprocess.run([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
out = json.loads(p.stdout)
lim = resource.getrlimit(resource.RLIMIT_NOFILE)
out.update({"limit": lim, "raise": attempt(resource.setrlimit, resource.RLIMIT_NOFILE, (lim[1] * 4, lim[1] * 4))})
emit(out)
'''


def test_nofile_limits_open_files(runner):
    """--nofile 64: opening 100 files fails with EMFILE; the hard limit cannot be raised."""
    r = runner.probe(NOFILE, opts=opts_for(runner, ["--nofile", "64"]))
    assert r["limit"] == [64, 64], r
    assert r["err"] == "EMFILE" and r["base"] + r["opened"] == 64, r
    assert r["raise"][0] != "ok", r


FSIZE = r'''
import resource, subprocess
path = "/tmp/ik-fsize"
written, err = 0, None
try:
    with open(path, "wb") as f:       # Python ignores SIGXFSZ: the write fails with EFBIG
        for _ in range(2):
            f.write(b"\0" * (1 << 20)); f.flush()
            written += 1 << 20
except OSError as e:
    err = ename(e.errno)
size = os.path.getsize(path)
os.unlink(path)
# A program with the default SIGXFSZ action is killed by it.
sh = subprocess.run(["sh", "-c", "head -c 2097152 /dev/zero > /tmp/ik-fsize2; echo $?"], stdout=subprocess.PIPE,
                    text=True)
size2 = os.path.getsize("/tmp/ik-fsize2"); os.unlink("/tmp/ik-fsize2")
emit({"limit": resource.getrlimit(resource.RLIMIT_FSIZE), "err": err, "size": size, "sh_status": sh.stdout.strip(),
      "size2": size2, "raise": attempt(resource.setrlimit, resource.RLIMIT_FSIZE, (-1, -1))})
'''


def test_fsize_limits_file_size(runner):
    """--fsize 1M: writing 2M fails with EFBIG (or SIGXFSZ for a program that does not ignore it)."""
    r = runner.probe(FSIZE, opts=opts_for(runner, ["--fsize", "1M"]))
    assert r["limit"] == [1 << 20, 1 << 20], r
    assert r["err"] == "EFBIG" and r["size"] == 1 << 20, r
    assert r["sh_status"] == str(128 + 25) and r["size2"] <= 1 << 20, r    # SIGXFSZ = 25
    assert r["raise"][0] != "ok", r


MEMORY = r'''
import resource
res = {"limit": resource.getrlimit(resource.RLIMIT_AS)}
try:
    small = bytearray(32 << 20); res["small"] = "ok"; del small
except MemoryError:
    res["small"] = "MemoryError"
try:
    big = bytearray(1 << 30); res["big"] = "ok"; del big
except MemoryError:
    res["big"] = "MemoryError"
res["raise"] = attempt(resource.setrlimit, resource.RLIMIT_AS, (-1, -1))
emit(res)
'''


def test_memory_limit(runner):
    """--memory 256M (1G for the kernel): allocating 1 GiB fails with MemoryError, 32 MiB still works."""
    cap = (256 << 20) if runner.kind == "isolate" else (1 << 30)
    r = runner.probe(MEMORY, opts=opts_for(runner, ["--memory", "256M"]))
    assert r["limit"] == [cap, cap], r
    assert r["small"] == "ok" and r["big"] == "MemoryError", r
    assert r["raise"][0] != "ok", r


BUSY = "while True: pass"


def test_cpu_time_kills_busy_loop(runner):
    """--cpu-time: a busy loop is killed by SIGXCPU (or SIGKILL at the hard limit): exit 128+24 / 128+9.

    isolate --cpu-time 1 runs the loop as its program; the kernel (--cpu-time 3, ipykernel needs ~1 s of CPU
    to start) runs it in a cell, and the launcher must exit with the kernel's status."""
    if runner.kind == "isolate":
        t0 = time.monotonic()
        r = runner.probe("", opts=["--cpu-time", "1"], program=["/usr/bin/python3", "-c", BUSY],
                         expect_verdict=False, timeout=30)
        assert r.returncode in (128 + 24, 128 + 9), r
        assert time.monotonic() - t0 < 15, r
        return
    opts = ["--cpu-time", "3"]
    k = runner.kernel(opts, fresh=True)
    r = runner.probe(BUSY, opts=opts, expect_verdict=False, allow_death=True, timeout=30)
    assert r.kernel.get("died") or r.kernel.get("alive") is False, r
    dead = k.request({"op": "wait_dead", "timeout": 10}, timeout=20)
    assert dead.get("dead") and dead.get("returncode") in (128 + 24, 128 + 9), (dead, r)


SLEEPER = "import time; time.sleep(120)"


def test_wall_time_kills_sleeping_program(runner):
    """--wall-time: a sleeping program (which uses no CPU) is killed, with everything in the sandbox; isolate
    exits 137 and says why in one message."""
    marker = f"ik-wall-{runner.ctx.sec.token}-{runner.mode}"
    if runner.kind == "isolate":
        t0 = time.monotonic()
        r = runner.probe("", opts=["--wall-time", "2"],
                         program=["/usr/bin/python3", "-c", f"import time; time.sleep(120)  # {marker}"],
                         expect_verdict=False, timeout=30)
        elapsed = time.monotonic() - t0
        assert r.returncode == 128 + signal.SIGKILL and 1.5 < elapsed < 10, r
        lines = r.stderr.splitlines()
        assert any("wall-time" in line for line in lines), r
        assert len(lines) <= 2, f"{len(lines)} stderr lines, first: {lines[:3]}"
        assert wait_until(lambda: not processes_matching([marker]), 3) is True
        return
    opts = ["--wall-time", "6"]
    k = runner.kernel(opts, fresh=True)
    t_start = time.monotonic()
    cf = k.info["connection_file"]
    r = runner.probe(SLEEPER, opts=opts, expect_verdict=False, allow_death=True, timeout=30)
    dead = k.request({"op": "wait_dead", "timeout": 15}, timeout=25)
    assert dead.get("dead") and dead.get("returncode") != 0, (dead, r)
    assert time.monotonic() - t_start < 25, (dead, r)
    # Kernel and init went with the launcher.
    assert wait_until(lambda: not processes_matching([cf]), 3) is True, processes_matching([cf])


NPROC = r'''
import resource
lim = resource.getrlimit(resource.RLIMIT_NPROC)
r, w = os.pipe()
kids, err = [], None
try:
    for _ in range(300):
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        kids.append(pid)
except OSError as e:
    err = ename(e.errno)
os.close(w)
for k in kids: os.waitpid(k, 0)
os.close(r)
emit({"limit": lim, "forked": len(kids), "err": err,
      "raise": attempt(resource.setrlimit, resource.RLIMIT_NPROC, (-1, -1))})
'''


def nproc_mechanism(runner, n: int) -> str:
    """What enforces --nproc for this runner's caller, as isolate plans it from the caller's cgroup (the kernel
    runners' launcher starts from the same cgroup as isolate here): "cgroup pids.max" or "rlimit RLIMIT_NPROC"."""
    ctx = runner.ctx
    r = subprocess.run(ctx.ident.prefix() + [str(ctx.sec.isolate), "--print-plan", "--nproc", str(n)],
                       cwd=ctx.files.work, env=ctx.env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    return json.loads(r.stdout)["limit_mechanisms"]["nproc"]


def test_nproc_limits_forking(runner, cgroup_takeover):
    """--nproc: forking stops with EAGAIN well before 300 children.

    Through a cgroup's pids.max when the caller's cgroup v2 can give one (cgroup_takeover arranges that on
    throwaway machines: then root is bound too), else RLIMIT_NPROC, which counts the processes (threads) of
    the caller's uid. Either way the limit is picked above what the sandbox itself needs (ipykernel runs ~11
    threads)."""
    n = 20 if runner.kind == "isolate" else 64
    via = nproc_mechanism(runner, n)
    r = runner.probe(NPROC, opts=["--nproc", str(n)], timeout=60)
    if via == "cgroup pids.max":
        # pids.max counts every task in the sandbox (its init and the kernel's threads too); no rlimit is set.
        assert r["err"] == "EAGAIN" and r["forked"] < n, r
        assert r["limit"] != [n, n], r
        return
    assert via == "rlimit RLIMIT_NPROC", via
    assert r["limit"] == [n, n], r
    if runner.mode == "root":
        assert r["err"] is None and r["forked"] == 300, r   # still unbounded: the known weakness
        pytest.xfail(NPROC_ROOT_BUG)
    assert r["err"] == "EAGAIN" and r["forked"] < n, r
    assert r["raise"][0] != "ok", r
