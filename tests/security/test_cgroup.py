"""Limits through cgroup v2: the sandbox's own cgroup, pids.max against fork
bombs, memory.max against memory bombs, and the fallback to rlimits.

Runs as root and as the unprivileged user (`iktest`). The user gets a cgroup
delegated the way systemd does it (`delegated_cgroup`) and starts isolate
alone in it, as under `systemd-run --user --scope -p Delegate=yes`.

What runs where:
- fallback and error tests: whenever the cgroup v2 lacks the controllers
  (a hybrid host whose v1 hierarchies hold pids and memory);
- the sandbox's own cgroup without controllers (--limits=cgroup alone),
  placement, cgroup namespace, cleanup, stale cgroups after SIGKILL: as root
  and with a delegated cgroup, on any cgroup v2;
- fork bombs against pids.max: when the pids controller is on cgroup v2,
  natively or through `cgroup_takeover` (root and IK_CGROUP_TAKEOVER=1);
- the memory bomb against memory.max: only where the memory controller is on
  cgroup v2 already (the takeover never touches memory).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from kit.cgroup import controllers, own_cgroup, subtree_control, v1_holder, v2_root
from kit.common import PYTHON, SAFE_PATH, TEST_USER, processes_matching, setpriv_prefix, wait_until
from kit.security import Ctx, KernelRunner

ROOT = v2_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason="no cgroup v2 mounted")
MODES = ["root", "user"]


def env_for(files) -> dict:
    pw = files.ident.pw
    return {"PATH": SAFE_PATH, "HOME": pw.pw_dir, "USER": pw.pw_name, "LANG": "C.UTF-8"}


def isolate_cmd(sec, mode: str, args: list[str]) -> list[str]:
    files = sec.files(mode)
    prefix = setpriv_prefix(TEST_USER) if files.ident.mode == "user" else []
    return prefix + [str(sec.isolate), *args]


def run(sec, mode, args, cgroup=None, timeout=60, nice=False) -> subprocess.CompletedProcess:
    files = sec.files(mode)
    cmd = (["nice", "-n", "19"] if nice else []) + isolate_cmd(sec, mode, args)
    return subprocess.run(cmd, cwd=files.work, env=env_for(files), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, start_new_session=True,
                          preexec_fn=cgroup.preexec if cgroup else None)


def start(sec, mode, args, cgroup=None) -> subprocess.Popen:
    files = sec.files(mode)
    return subprocess.Popen(isolate_cmd(sec, mode, args), cwd=files.work, env=env_for(files), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=cgroup.preexec if cgroup else None)


def plan(sec, mode, args, cgroup=None) -> dict:
    r = run(sec, mode, ["--print-plan", *args], cgroup=cgroup)
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def where(mode, delegated_cgroup, sec, enable=()):
    """(parent cgroup directory of the sandbox's cgroup, the Delegated or None) for a mode."""
    if mode == "root":
        if os.geteuid() != 0:
            pytest.skip("needs root")
        assert own_cgroup() == "/", "these tests expect root to run in the root cgroup"
        return ROOT, None
    d = delegated_cgroup(sec.files(mode).ident.pw, enable)
    return d.path, d


def cgroup_of(pid: int) -> str:
    return own_cgroup(pid)


# ------------------------------------------------------------------ fallback (no controller on cgroup v2)

NO_CONTROLLERS = ROOT is not None and not ({"pids", "memory"} & controllers(ROOT))


@pytest.mark.skipif(not NO_CONTROLLERS, reason="this cgroup v2 has pids or memory: no fallback to show")
@pytest.mark.parametrize("mode", MODES)
def test_fallback_to_rlimits_is_reported(sec, mode):
    """No pids/memory controller on cgroup v2: --nproc and --memory become rlimits, -v and --print-plan say
    so and why, and the rlimit holds (as the user: forking stops at EAGAIN)."""
    p = plan(sec, mode, ["--memory", "256M", "--nproc", "20"])
    assert p["limit_mechanisms"] == {"memory": "rlimit RLIMIT_AS", "nproc": "rlimit RLIMIT_NPROC"}, p
    assert p["cgroup"]["use"] is False and "dir" not in p["cgroup"], p
    why = p["cgroup"]["why"]
    assert "has no memory and pids controllers" in why and "use rlimits" in why, why
    probe = ("import os, errno, resource, json\nkids, err = [], None\n"
             "try:\n    for _ in range(100):\n        pid = os.fork()\n        if pid == 0:\n            os.read(r, 1)\n"
             "            os._exit(0)\n        kids.append(pid)\nexcept OSError as e:\n    err = errno.errorcode[e.errno]\n"
             "print(json.dumps({'forked': len(kids), 'err': err, 'limit': resource.getrlimit(resource.RLIMIT_NPROC)}))\n")
    probe = "import os\nr, w = os.pipe()\n" + probe
    r = run(sec, mode, ["-v", "--memory", "256M", "--nproc", "20", "--", PYTHON, "-c", probe])
    assert r.returncode == 0, r
    assert "limit --memory 256M: rlimit RLIMIT_AS" in r.stderr, r.stderr
    assert "limit --nproc 20: rlimit RLIMIT_NPROC" in r.stderr, r.stderr
    assert "has no memory and pids controllers" in r.stderr, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["limit"] == [20, 20], out
    if mode == "user":
        assert out["err"] == "EAGAIN" and out["forked"] < 20, out
    else:
        assert "--nproc is not enforced when the caller is root" in r.stderr, r.stderr


@pytest.mark.skipif(not NO_CONTROLLERS, reason="this cgroup v2 has pids or memory")
@pytest.mark.parametrize("mode", MODES)
def test_limits_cgroup_without_controller_is_one_clear_error(sec, mode):
    """--limits=cgroup --nproc with no pids controller: exit 125, one line naming what is missing and the way out."""
    r = run(sec, mode, ["--limits=cgroup", "--nproc", "20", "--", "/bin/echo", "RAN"])
    assert r.returncode == 125, r
    assert "RAN" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("isolate: --limits=cgroup: cgroup v2 at ") and "has no pids controller" in lines[0], lines
    assert "--limits=auto" in lines[0] and "Delegate=yes" in lines[0], lines


def test_user_without_delegation_falls_back(sec):
    """The user in a cgroup that is not delegated: auto falls back (reason: not writable); cgroup refuses."""
    mode = "user"
    if sec.files(mode).ident.mode != "user":
        pytest.skip("needs root, to run as the test user in root's (not delegated) cgroup")
    p = plan(sec, mode, ["--nproc", "20"])
    assert p["limit_mechanisms"]["nproc"] == "rlimit RLIMIT_NPROC", p
    assert "not writable" in p["cgroup"]["why"] or "has no pids controller" in p["cgroup"]["why"], p
    r = run(sec, mode, ["--limits=cgroup", "--", "/bin/true"])
    assert r.returncode == 125 and "--limits=cgroup" in r.stderr and "not writable" in r.stderr, r


# ------------------------------------------------------------------ the sandbox's own cgroup (any cgroup v2)

WAIT_AND_REPORT = "grep '^0::' /proc/self/cgroup; echo ready; read x; echo bye"


@pytest.mark.parametrize("mode", MODES)
def test_sandbox_runs_in_its_own_cgroup_and_it_is_removed(sec, mode, delegated_cgroup):
    """--limits=cgroup: isolate creates PARENT/isolated-kernel-<its pid>, the sandbox's init and program run in it
    from the start (the launcher does not), inside they see their cgroup as "/", and it is gone afterwards."""
    parent, deleg = where(mode, delegated_cgroup, sec)
    p = start(sec, mode, ["-v", "--limits=cgroup", "--", "/bin/sh", "-c", WAIT_AND_REPORT], cgroup=deleg)
    try:
        seen = []
        for line in p.stdout:
            seen.append(line.strip())
            if line.strip() == "ready":
                break
        assert seen == ["0::/", "ready"], (seen, p.stderr.read() if p.poll() is not None else "")
        cg = parent / f"isolated-kernel-{p.pid}"
        assert cg.is_dir()
        members = [int(x) for x in (cg / "cgroup.procs").read_text().split()]
        assert len(members) >= 2, members            # the init and sh (and nothing else of ours)
        rel = "/" + str(cg.relative_to(ROOT))
        assert all(cgroup_of(m) == rel for m in members), [(m, cgroup_of(m)) for m in members]
        assert p.pid not in members and cgroup_of(p.pid) != rel  # the launcher stays outside
        p.stdin.write("\n")
        p.stdin.close()
        assert p.stdout.read().strip() == "bye"
        assert p.wait(30) == 0
        err = p.stderr.read()
        assert f"cgroup: created {cg}" in err and f"cgroup: removed {cg}" in err, err
        assert not cg.exists()
        if deleg is not None:   # the delegated cgroup is as it was: no leftovers, isolate back in its own cgroup
            assert [c.name for c in deleg.path.iterdir() if c.is_dir()] == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("mode", MODES)
def test_cgroup_left_by_a_killed_launcher_is_removed_at_next_start(sec, mode, delegated_cgroup):
    """SIGKILL isolate: the sandbox dies with it (PDEATHSIG) but its empty cgroup stays; the next start in the
    same parent removes it and says so with -v."""
    parent, deleg = where(mode, delegated_cgroup, sec)
    marker = f"ik-cg-stale-{sec.token}-{mode}"
    p = start(sec, mode, ["--limits=cgroup", "--", "/bin/sh", "-c", f"echo ready; exec sleep 120 # {marker}"],
              cgroup=deleg)
    cg = parent / f"isolated-kernel-{p.pid}"
    try:
        assert p.stdout.readline().strip() == "ready"
        assert cg.is_dir()
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        assert wait_until(lambda: not processes_matching([marker]), 5), processes_matching([marker])
        assert wait_until(lambda: (cg / "cgroup.procs").read_text().strip() == "", 5)
        assert cg.is_dir(), "the killed launcher could not remove it: the next start must"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    r = run(sec, mode, ["-v", "--limits=cgroup", "--", "/bin/true"], cgroup=deleg)
    assert r.returncode == 0, r
    assert not cg.exists()
    assert f"cgroup: removed {cg}, left by a launcher that is gone" in r.stderr, r.stderr


# ------------------------------------------------------------------ pids.max against fork bombs

FORK_UNTIL_REFUSED = r'''
import errno, json, os, time
forked, err = 0, None
while forked < 2000:
    try:
        pid = os.fork()
    except OSError as e:
        err = errno.errorcode[e.errno]
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    forked += 1
print(json.dumps({"forked": forked, "err": err}), flush=True)
os._exit(0)
'''

# Every process forks forever: the classic bomb. Ends by --wall-time.
FORK_BOMB = r'''
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
'''


def need_pids(takeover):
    if "pids" not in controllers(ROOT):
        pytest.skip(f"no pids controller on cgroup v2 at {ROOT}: {takeover.reason or 'not offered by the kernel'}")


@pytest.mark.parametrize("mode", MODES)
def test_nproc_is_pids_max_and_holds_for_root_too(sec, mode, cgroup_takeover, delegated_cgroup):
    """--nproc 20 through pids.max: the 19th process is refused (init + python + 18 children = 20), also for
    root, whom RLIMIT_NPROC does not bind; -v says which mechanism; the exit note explains the refusals."""
    need_pids(cgroup_takeover)
    parent, deleg = where(mode, delegated_cgroup, sec, enable=["pids"])
    p = plan(sec, mode, ["--nproc", "20"], cgroup=deleg)
    assert p["limit_mechanisms"]["nproc"] == "cgroup pids.max", p
    r = run(sec, mode, ["-v", "--nproc", "20", "--", PYTHON, "-c", FORK_UNTIL_REFUSED], cgroup=deleg)
    assert r.returncode == 0, r
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"forked": 18, "err": "EAGAIN"}, (out, r.stderr)
    assert "limit --nproc 20: cgroup pids.max" in r.stderr, r.stderr
    assert re.search(r"isolate: \d+ forks? refused at the process limit of 20 \(cgroup pids\.max, --nproc\)",
                     r.stderr), r.stderr
    assert "RLIMIT_NPROC" not in r.stderr and "not enforced when the caller is root" not in r.stderr, r.stderr
    if deleg is not None:
        assert "moved the launcher into" in r.stderr, r.stderr   # the leaf dance (no internal processes)
        assert [c.name for c in deleg.path.iterdir() if c.is_dir()] == []
        assert "pids" not in subtree_control(deleg.path)        # undone


@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb_is_contained_and_the_host_keeps_forking(sec, mode, cgroup_takeover, delegated_cgroup):
    """A real fork bomb (every process forks forever) under --nproc 50 --wall-time 4: the sandbox never holds
    more than 50 tasks, the host can still start processes meanwhile, the run ends by the wall time with both
    reasons printed, and nothing is left."""
    need_pids(cgroup_takeover)
    parent, deleg = where(mode, delegated_cgroup, sec, enable=["pids"])
    marker = f"ik-cg-bomb-{sec.token}-{mode}"
    files = sec.files(mode)
    cmd = ["nice", "-n", "19"] + isolate_cmd(sec, mode, ["--nproc", "50", "--wall-time", "4", "--", PYTHON, "-c",
                                                         FORK_BOMB + f"# {marker}"])
    p = subprocess.Popen(cmd, cwd=files.work, env=env_for(files), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=deleg.preexec if deleg else None)
    try:
        # `nice` execs isolate: p.pid is isolate's pid and names the cgroup.
        cg = parent / f"isolated-kernel-{p.pid}"
        assert wait_until(cg.is_dir, 10), "no sandbox cgroup"
        peak, host_ok = 0, True
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                peak = max(peak, int((cg / "pids.current").read_text()))
                if (cg / "pids.peak").exists():    # Linux 6.x: the kernel's own high-water mark
                    peak = max(peak, int((cg / "pids.peak").read_text()))
            except (OSError, ValueError):
                break
            host_ok = host_ok and subprocess.run(["/bin/true"], timeout=10).returncode == 0
            time.sleep(0.1)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert host_ok
    assert 40 <= peak <= 50, peak
    assert p.returncode == 128 + signal.SIGKILL, (p.returncode, err)
    assert "killed after the wall-time limit of 4s" in err, err
    assert re.search(r"isolate: \d+ forks refused at the process limit of 50 \(cgroup pids\.max, --nproc\)", err), err
    assert wait_until(lambda: not processes_matching([marker]), 5), processes_matching([marker])
    assert not cg.exists()


# ------------------------------------------------------------------ memory.max against memory bombs

MEMORY_BOMB = r'''
chunks = []
while True:
    chunks.append(bytearray(8 << 20))   # touched: bytearray zero-fills
'''


@pytest.mark.parametrize("mode", MODES)
def test_memory_bomb_is_killed_by_memory_max(sec, mode, cgroup_takeover, delegated_cgroup):
    """--memory 64M through memory.max: a program allocating without end is OOM-killed with the whole sandbox
    (memory.oom.group), exit 137, and the note names the memory limit."""
    if "memory" not in controllers(ROOT):
        holder = v1_holder("memory")
        pytest.skip(f"the memory controller is not on cgroup v2 at {ROOT}" +
                    (f" (cgroup v1 holds it at {holder}; it is never taken over)" if holder else ""))
    parent, deleg = where(mode, delegated_cgroup, sec, enable=["memory"])
    p = plan(sec, mode, ["--memory", "64M"], cgroup=deleg)
    assert p["limit_mechanisms"]["memory"] == "cgroup memory.max", p
    assert p["cgroup"]["files"]["memory.oom.group"] == "1", p
    r = run(sec, mode, ["--memory", "64M", "--", PYTHON, "-c", MEMORY_BOMB], cgroup=deleg, nice=True)
    assert r.returncode == 128 + signal.SIGKILL, r
    assert "killed by the memory limit of 64M (cgroup memory.max, --memory)" in r.stderr, r.stderr


# ------------------------------------------------------------------ kernels

def test_kernel_runs_in_its_own_cgroup(sec, kernel_pool):
    """An isolated kernel with --limits=cgroup (as root, started by jupyter_client): the kernel sees its cgroup as
    "/", the host sees it in ROOT/isolated-kernel-<launcher pid>, and the cgroup goes with the kernel."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the user's cgroup is not delegated here)")
    runner = KernelRunner(Ctx(sec, "root", "kernel"), [], kernel_pool)
    opts = ["--limits=cgroup"]
    r = runner.probe("emit({'cg': read_text('/proc/self/cgroup'), 'pid': os.getpid()})", opts=opts)
    assert "0::/\n" in r["cg"], r
    k = runner.kernel(opts)
    cf = k.info["connection_file"]
    launcher = [pid for pid, cmd in processes_matching([cf]) if str(sec.launcher) in cmd and cgroup_of(pid) == "/"]
    assert len(launcher) == 1, processes_matching([cf])
    cg = ROOT / f"isolated-kernel-{launcher[0]}"
    members = [int(x) for x in (cg / "cgroup.procs").read_text().split()]
    assert len(members) >= 2 and launcher[0] not in members, members
    k.close()
    assert wait_until(lambda: not cg.exists(), 10), f"{cg} left behind"
