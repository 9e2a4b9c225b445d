"""Warm pool cost control (docs/pool.md "Cost control"): refills at a low CPU
priority (scheduler autogroup nice 19 while filling, back to 0 once ready), the cap on
the pooled memory, `pool start` filling the installed pooled kernelspecs,
and the systemd user unit. Real daemons, sandboxes and ipykernel kernels, as
root and as the test user (the fixtures of test_pool.py).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kit.common import wait_until  # noqa: E402
from kit.kernel import run_cell, scenario, scenario_main, step  # noqa: E402
import test_pool  # noqa: E402
from test_pool import _claimed, _ik, _start, _status, _stop  # noqa: E402

# test_pool.py's fixtures (this module's client scenarios run from the
# session's script copy: kit/kernel.py SCRIPTS).
ph, pool_session = test_pool.ph, test_pool.pool_session

REPO = Path(__file__).resolve().parents[2]


# Refills run at nice 19: on a machine busy with other work they take their
# time (that is the point), so waits for a filled pool are long.
FILL = 600


def _scenario(ph, name, **args):
    return ph.h.scenario(__file__, name, env=ph.env(), timeout=4 * FILL, **args)


def _autogroup(pid: int) -> tuple[str, int]:
    """("/autogroup-N", nice) of a process."""
    m = re.match(r"(\S+) nice (-?\d+)", Path(f"/proc/{pid}/autogroup").read_text())
    return m.group(1), int(m.group(2))


def _session(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])  # state ppid pgrp session


def _pools() -> list:
    return _status().get("pools", [])


def _settled() -> bool:
    """No sandbox is starting and the pool is full or says why not."""
    pools = _pools()
    return bool(pools) and all(p["starting"] == 0 and (p["ready"] >= p["size"] or p["held_back"] or p["last_error"])
                               for p in pools)


def _expect_low_priority() -> bool:
    """What the kernel says of us: autogroups on and the root cpu cgroup (v1 here, or v2 without cpu below root)."""
    if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
        return False
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if "cpu" in ctrls.split(",") and path != "/":
            return False
    return True


# ----------------------------------------------------------- client side

@scenario
def priority(out, cwd, logdir):
    logdir = Path(logdir)
    with step(out, "waiting") as s:
        s["start"] = _ik("pool", "start")
        s["status_at_start"] = _status()  # served after the scan: the pool is there already
        s["settled"] = bool(wait_until(_settled, FILL, 0.2))
        st = _status()
        s["low_priority"], s["priority"] = st["low_priority"], st["priority"]
        s["mechanism"] = st["priority_mechanism"]
        s["text"] = _ik("pool", "status")["out"]
        w = st["pools"][0]["waiting"][0]
        s["waiter"], s["helper"], s["daemon"] = w["program_pid"], w["helper_pid"], st["pid"]
        s["reported_nice"] = w["fill_nice"]
        s["nice_now"] = w["nice"]
        s["waiter_group"] = _autogroup(w["program_pid"])
        s["helper_group"] = _autogroup(w["helper_pid"])
        s["daemon_group"] = _autogroup(st["pid"])
        s["sessions"] = [_session(w["program_pid"]), _session(w["helper_pid"]), _session(st["pid"])]
    with step(out, "claimed") as s:
        # The first launch after `pool start` is warm: the pool was filled from the installed kernelspec.
        km, kc = _start(cwd, logdir / "a.log")
        s["how"] = _claimed(logdir / "a.log")
        kernel = int(re.search(r"kernel pid (\d+)", (logdir / "a.log").read_text()).group(1))
        s["kernel"] = kernel
        # The claim does not wait for a rate-limited write: wait for it here.
        s["nice_0"] = bool(wait_until(lambda: _autogroup(kernel)[1] == 0, 10, 0.05))
        s["kernel_group"] = _autogroup(kernel)
        s["works"] = run_cell(kc, "print(6*7)")["stdout"].strip()
        _stop(km, kc)


@scenario
def memory_cap(out, cwd, logdir):
    with step(out, "tiny") as s:
        s["start"] = _ik("pool", "start", "--max-memory", "1M")
        s["settled"] = bool(wait_until(_settled, FILL, 0.2))
        s["status"] = _status()
        s["text"] = _ik("pool", "status")["out"]
        _ik("pool", "stop")
        wait_until(lambda: not _status().get("running"), 10, 0.1)
    with step(out, "uncapped") as s:
        s["start"] = _ik("pool", "start", "--max-memory", "0")
        s["settled"] = bool(wait_until(_settled, FILL, 0.2))
        s["status"] = _status()
        _ik("pool", "stop")
        wait_until(lambda: not _status().get("running"), 10, 0.1)
    with step(out, "one_and_a_half") as s:
        # Room for one sandbox and a half of the largest measured above: one is kept, the second is not started.
        largest = max(w["memory_kib"] for w in out["uncapped"]["status"]["pools"][0]["waiting"])
        s["cap_kib"] = largest * 3 // 2
        s["start"] = _ik("pool", "start", "--max-memory", f"{s['cap_kib']}K")
        s["settled"] = bool(wait_until(_settled, FILL, 0.2))
        s["status"] = _status()
        _ik("pool", "stop")


@scenario
def scan(out):
    with step(out, "no_scan") as s:
        s["start"] = _ik("pool", "start", "--no-scan")
        s["status"] = _status()
        _ik("pool", "stop")
        wait_until(lambda: not _status().get("running"), 10, 0.1)
    with step(out, "scan") as s:
        s["start"] = _ik("pool", "start")
        s["status"] = _status()
        s["settled"] = bool(wait_until(_settled, FILL, 0.2))
        s["ready"] = _status()["pools"][0]["ready"]
        _ik("pool", "stop")


@scenario
def unit_foreground(out, argv):
    """Runs the unit's ExecStart (with the build's program) as systemd would, and stops it as systemd does."""
    with step(out, "run") as s:
        p = subprocess.Popen([os.environ["IK_POOL_BIN"], *argv[1:]], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        s["running"] = bool(wait_until(lambda: _status().get("running"), FILL, 0.1))
        st = _status()
        s["pid"], s["idle_timeout"] = st.get("pid"), st.get("idle_timeout")
        s["settled"] = bool(wait_until(_settled, FILL, 0.2))
        s["ready"] = _status()["pools"][0]["ready"]
        p.send_signal(signal.SIGTERM)  # KillMode=process: systemd signals the daemon only
        o, e = p.communicate(timeout=30)
        s["rc"], s["stdout"], s["stderr"] = p.returncode, o, e
        s["stopped"] = not _status().get("running")


# ----------------------------------------------------------- pytest side

def test_refills_wait_at_low_priority_and_the_claimed_kernel_runs_at_normal_priority(ph):
    h = ph.h
    logs = h.mkdir(h.base / "logs")
    res = _scenario(ph, "priority", cwd=str(h.workdir), logdir=str(logs))
    w, c = res["waiting"], res["claimed"]
    assert w["start"]["rc"] == 0, w["start"]
    assert w["settled"], w
    low = _expect_low_priority()
    # Without autogroups the cgroup fallback may apply (test_pool_fallback.py): the autogroup is then not lowered.
    assert w["mechanism"] == ("autogroup" if low else "cgroup" if w["low_priority"] else "none"), w
    assert w["low_priority"] is (low or w["mechanism"] == "cgroup"), w
    assert ("low CPU priority" if w["low_priority"] else "normal priority") in w["priority"]
    assert w["priority"] in w["text"] and w["priority"] in w["start"]["out"], w
    # The waiter, its init and helper: one session of their own (not the daemon's), so one autogroup.
    waiter_s, helper_s, daemon_s = w["sessions"]
    assert waiter_s == helper_s == w["helper"] and daemon_s != helper_s, w
    assert w["waiter_group"] == w["helper_group"] and w["waiter_group"][0] != w["daemon_group"][0], w
    if low:  # autogroup
        # The fill ran at nice 19 (what the helper read back after lowering
        # it); once ready the sandbox waits idle at nice 0, so that a claim
        # needs no rate-limited autogroup write before the kernel runs.
        assert w["reported_nice"] == 19 and w["waiter_group"][1] == 0 and w["nice_now"] == 0, w
        assert w["daemon_group"][1] == 0, w
    else:
        assert w["waiter_group"][1] == 0, w
    assert c["how"] == "claimed", c
    assert c["kernel"] == w["waiter"], c  # the waiter became the kernel
    assert c["nice_0"] and c["kernel_group"] == [w["waiter_group"][0], 0], c  # lists: the result is JSON
    assert c["works"] == "42"


def test_memory_cap_keeps_fewer_sandboxes_and_status_says_why(ph):
    h = ph.h
    ph.write_spec({"mounts": ["."], "pool": 2})
    logs = h.mkdir(h.base / "logs")
    res = _scenario(ph, "memory_cap", cwd=str(h.workdir), logdir=str(logs))
    tiny, free, mid = res["tiny"], res["uncapped"], res["one_and_a_half"]
    assert tiny["start"]["rc"] == 0 and tiny["settled"], tiny
    p = tiny["status"]["pools"][0]
    assert p["size"] == 2 and p["ready"] == 0, p
    assert "--max-memory" in p["held_back"] and "memory cap 1M" in p["held_back"], p
    assert tiny["status"]["max_memory_kib"] == 1024
    assert "fewer than 2: memory cap 1M" in tiny["text"] and "of 1 MiB (--max-memory)" in tiny["text"], tiny["text"]

    assert free["settled"], free
    p = free["status"]["pools"][0]
    assert p["ready"] == 2 and not p["held_back"] and free["status"]["max_memory_kib"] == 0, p
    assert all(w["memory_kib"] > 1024 for w in p["waiting"]), p
    assert p["memory_kib"] == sum(w["memory_kib"] for w in p["waiting"])
    assert len(p["ages"]) == 2

    assert mid["settled"], mid
    p = mid["status"]["pools"][0]
    assert p["ready"] == 1 and "--max-memory" in p["held_back"], (mid["cap_kib"], p)
    assert mid["status"]["memory_kib"] <= mid["cap_kib"], mid


def test_pool_start_fills_the_installed_pooled_kernelspecs(ph):
    res = _scenario(ph, "scan")
    assert res["no_scan"]["start"]["rc"] == 0 and res["no_scan"]["status"]["pools"] == [], res["no_scan"]
    s = res["scan"]
    assert s["start"]["rc"] == 0, s
    pools = s["status"]["pools"]
    assert len(pools) == 1 and pools[0]["size"] == 1, pools
    # the launcher argv jupyter_client runs, {resource_dir} substituted
    assert pools[0]["spec"][:2] == ["--kernelspec", str(ph.spec_dir)], pools
    assert s["settled"] and s["ready"] == 1, s


def _unit_file() -> Path:
    return Path(os.environ.get("IK_BUILD_DIR", REPO / "build")) / "systemd" / "user" / "isolated-kernel-pool.service"


def _unit_exec_start(text: str) -> list[str]:
    lines = [l for l in text.splitlines() if l.startswith("ExecStart=")]
    assert len(lines) == 1, text
    return shlex.split(lines[0].split("=", 1)[1])


def test_systemd_user_unit_runs_the_installed_program_in_the_foreground(ph):
    unit = _unit_file()
    assert unit.is_file(), f"{unit}: not configured by CMake"
    text = unit.read_text()
    argv = _unit_exec_start(text)
    cache = (unit.parents[2] / "CMakeCache.txt").read_text()
    prefix = re.search(r"^CMAKE_INSTALL_PREFIX:PATH=(.*)$", cache, re.M).group(1)
    assert argv[0] == f"{prefix}/bin/isolated-kernel", argv
    assert argv[1:4] == ["pool", "start", "--foreground"], argv
    assert "KillMode=process" in text and "WantedBy=default.target" in text
    assert "Delegate=cpu" in text  # the refill cgroup fallback (pool/cpu_cgroup.hpp)
    res = _scenario(ph, "unit_foreground", argv=argv)
    r = res["run"]
    assert r["running"] and r["idle_timeout"] == 0, r
    assert r["settled"] and r["ready"] == 1, r  # it filled the installed pooled kernelspec
    assert r["rc"] == 0 and r["stopped"], r
    assert "refills run at" in r["stderr"], r


def test_systemd_user_unit_does_not_restart_a_daemon_that_cannot_start(ph):
    """Restart=on-failure, but not for the exit statuses of a bad setting and
    of a daemon already running: the unit's ExecStart (the build's program)
    exits with one of its RestartPreventExitStatus= in both cases."""
    text = _unit_file().read_text()
    assert re.search(r"^Restart=on-failure$", text, re.M), text
    prevent = [l.split("=", 1)[1].split() for l in text.splitlines() if l.startswith("RestartPreventExitStatus=")]
    assert len(prevent) == 1, text
    argv = _unit_exec_start(text)[1:]
    d = ph.h.mkdir(ph.xdg / "isolated-kernel", 0o755)  # lets others in: a setting to fix
    r = ph.ik_run(*argv)
    assert r.returncode != 0 and "chmod 700" in r.stderr, r
    assert str(r.returncode) in prevent[0], (r.returncode, prevent)
    d.chmod(0o700)
    assert ph.ik_run("pool", "start", "--no-scan").returncode == 0
    r = ph.ik_run(*argv)
    assert r.returncode != 0 and "already runs" in r.stderr, r
    assert str(r.returncode) in prevent[0], (r.returncode, prevent)


def test_systemd_user_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # The unit as installed, but naming the build's program (the installed one may be absent here).
    text = _unit_file().read_text()
    build_prog = Path(os.environ.get("IK_POOL_BIN", _unit_file().parents[2] / "isolated-kernel")).resolve()
    argv = _unit_exec_start(text)
    unit = tmp_path / "isolated-kernel-pool.service"
    unit.write_text(text.replace(f"ExecStart={argv[0]} ", f"ExecStart={build_prog} "))
    rt = tmp_path / "runtime"  # --user verify needs a runtime directory, not a running manager
    rt.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(rt))
    r = subprocess.run([analyze, "--user", "verify", str(unit)], capture_output=True, text=True, timeout=60, env=env)
    # Other units of this machine may draw warnings; ours must not.
    ours = [l for l in (r.stdout + r.stderr).splitlines() if unit.name in l or str(build_prog) in l]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr
    # and a broken ExecStart is caught (the check can fail)
    bad = tmp_path / "bad" / unit.name
    bad.parent.mkdir()
    bad.write_text(text.replace(f"ExecStart={argv[0]} ", "ExecStart=/nonexistent/isolated-kernel "))
    r = subprocess.run([analyze, "--user", "verify", str(bad)], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0 and "/nonexistent/isolated-kernel" in r.stdout + r.stderr, r


if __name__ == "__main__":
    scenario_main()
