"""Low-priority refills where scheduler autogroups do not apply (docs/pool.md
"Cost control", launcher/pool/cpu_cgroup.hpp): with
kernel.sched_autogroup_enabled=0 the daemon falls back to a cpu cgroup of
low weight when it may make one (root here: the cgroup v1 cpu hierarchy),
its waiting sandboxes (helper, init, waiter) are in it, a claimed kernel is
moved back out, `pool status` names the mechanism, and `pool stop` removes
the cgroup. An unprivileged user with no delegated cgroup gets no fallback,
and `pool status` says so and why.

The sysctl is global: it is set to 0 only while `pool start` decides (it
returns once the daemon listens; the decision is made before), and restored
at once, also when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from kit.common import PYTHON, install_pool_waiter

SYSCTL = Path("/proc/sys/kernel/sched_autogroup_enabled")


def status(jup, env) -> dict:
    r = jup.ik("pool", "status", "--json", env=env)
    return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else {}


def cpu_cgroup(pid: int) -> str:
    """The cpu cgroup of PID: the v1 cpu hierarchy's path, else the v2 one."""
    lines = [ln.split(":", 2) for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
    for _, ctrls, path in lines:
        if "cpu" in ctrls.split(","):
            return path
    return next(path for _, ctrls, path in lines if ctrls == "")


@contextlib.contextmanager
def autogroups_off():
    if not SYSCTL.exists():
        yield
        return
    old = SYSCTL.read_text().strip()
    SYSCTL.write_text("0\n")
    try:
        yield
    finally:
        SYSCTL.write_text(old + "\n")


def test_refills_fall_back_to_a_cpu_cgroup_without_autogroups(jup, tools):
    if not SYSCTL.exists():
        import pytest
        pytest.skip("this kernel has no scheduler autogroups")
    install_pool_waiter(tools.root)
    xdg = jup.chown(Path(tempfile.mkdtemp(prefix="ikf-", dir="/tmp")))  # short: a socket path
    env = {"XDG_RUNTIME_DIR": str(xdg)}
    try:
        r = jup.ik("install", "--user", "--name", "fallback", "--pool", "1", "--no-check")
        assert r.returncode == 0, str(r)
        with autogroups_off():
            start = jup.ik("pool", "start", env=env)
        assert start.returncode == 0, str(start)
        st = status(jup, env)
        text = jup.ik("pool", "status", env=env).stdout
        assert st["priority"] in start.stdout and st["priority"] in text, (start.stdout, text)
        assert "scheduler autogroups are off (kernel.sched_autogroup_enabled=0)" in st["priority"], st
        deadline = time.monotonic() + 300
        while not (st.get("pools") and st["pools"][0]["ready"]):
            assert time.monotonic() < deadline, f"the pool did not fill: {st}"
            time.sleep(0.3)
            st = status(jup, env)
        w = st["pools"][0]["waiting"][0]
        if jup.mode == "root":
            # Root may make a cpu cgroup: refills get a low weight there.
            assert st["priority_mechanism"] == "cgroup" and st["low_priority"] is True, st
            assert "cpu.shares 2" in st["priority"] or "cpu.weight 1" in st["priority"], st
            refill = cpu_cgroup(w["helper_pid"])
            assert refill != cpu_cgroup(st["pid"]), (refill, st)
            assert cpu_cgroup(w["program_pid"]) == refill, w
            # A claim (a real jupyter_client start of the kernelspec) moves the kernel back.
            script = ("import sys, time\nfrom jupyter_client import KernelManager\n"
                      "km = KernelManager(kernel_name='fallback'); km.start_kernel()\n"
                      "kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=120)\n"
                      "print('ready', flush=True); sys.stdin.readline()\n"
                      "kc.stop_channels(); km.shutdown_kernel(now=True)\n")
            p = subprocess.Popen(jup.argv([PYTHON, "-c", script]), cwd=jup.work, env=jup.env(env),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                assert p.stdout.readline().strip() == "ready", p.stderr.read()
                assert status(jup, env)["pools"][0]["claimed"] == 1, status(jup, env)
                assert cpu_cgroup(w["program_pid"]) == cpu_cgroup(st["pid"]), "the kernel stayed in the refill cgroup"
            finally:
                p.communicate("\n", timeout=120)
            assert p.returncode == 0, p.stderr
            refill_dir = st["priority"].split("cgroup v1 ")[-1].split(" (")[0] if "cgroup v1" in st["priority"] else ""
            assert jup.ik("pool", "stop", env=env).returncode == 0
            if refill_dir:
                assert not Path(refill_dir).exists(), f"{refill_dir} left after pool stop"
        else:
            # No cgroup of ours to divide: normal priority, and why.
            assert st["priority_mechanism"] == "none" and st["low_priority"] is False, st
            assert "refills run at normal priority" in st["priority"] and "no cgroup fallback: " in st["priority"], st
            assert cpu_cgroup(w["helper_pid"]) == cpu_cgroup(st["pid"]), w
    finally:
        jup.ik("pool", "stop", env=env)
        shutil.rmtree(xdg, ignore_errors=True)
