"""Process containment: /proc leaks, host processes (signals, ptrace), the
sandbox's init, environment leaks.

Every test runs under isolate and inside an isolated kernel, as root and as
the unprivileged user (see tests/kit/security.py). The caller's environment carries
JUPYTER_TOKEN, AWS_SECRET_ACCESS_KEY and IK_SEC_CANARY secrets.
"""

from __future__ import annotations

import os
from pathlib import Path

import fcntl
import json
import socket

from kit.common import pid_alive
from kit.security import assert_errno

SANDBOX_OPTS: list[str] = []

PROC1_ROOT = r'''
emit({"readlink": attempt(os.readlink, "/proc/1/root"), "self_root": attempt(os.readlink, "/proc/self/root"),
      "list_proc1_root": attempt(lambda: sorted(os.listdir("/proc/1/root"))), "list_root": sorted(os.listdir("/")),
      "marker": attempt(read_text, "/proc/1/root" + P["tmp_marker"]),
      "hidden": attempt(read_text, "/proc/1/root" + P["hidden_secret"]),
      "cwd1": attempt(os.readlink, "/proc/1/cwd"),
      "cwd1_list": attempt(lambda: sorted(os.listdir("/proc/1/cwd")))})
'''


def test_proc1_root_is_the_sandbox_root(runner):
    """/proc/1/root (and cwd) of the sandbox's PID 1 lead into the sandbox view, never to the host's /."""
    r = runner.probe(PROC1_ROOT)
    if r["readlink"][0] == "ok":
        assert r["readlink"][1] == "/", r
    if r["list_proc1_root"][0] == "ok":
        assert r["list_proc1_root"][1] == r["list_root"], r
    assert r["marker"][0] == "err" and r["hidden"][0] == "err", r
    host_root = set(os.listdir("/"))
    assert set(r["list_root"]) != host_root, r
    if r["cwd1_list"][0] == "ok":
        assert set(r["cwd1_list"][1]) != host_root or r["cwd1"][1] == "/", r


INIT_ENV = r'''
env1 = attempt(lambda: open("/proc/1/environ", "rb").read().decode("utf-8", "replace"))
leaks = [v for v in P["secret_values"] if env1[0] == "ok" and v in env1[1]]
names = [n for n in P["secret_names"] if env1[0] == "ok" and (n + "=") in env1[1]]
emit({"readable": env1[0], "leaked_values": leaks, "leaked_names": names,
      "jpy_parent_pid": env1[0] == "ok" and "JPY_PARENT_PID=" in env1[1],
      "cmdline1": attempt(lambda: read_text("/proc/1/cmdline").replace("\0", " "))})
'''


def test_init_environ_has_no_secrets(runner):
    """/proc/1/environ (the sandbox init) must not reveal the caller's secret variables."""
    r = runner.probe(INIT_ENV)
    assert r["leaked_values"] == [] and r["leaked_names"] == [], r


ENV = r'''
own = dict(os.environ)
selfenv = open("/proc/self/environ", "rb").read().decode("utf-8", "replace")
others = {}
for pid in os.listdir("/proc"):
    if not pid.isdigit() or pid == "1": continue
    try: others[pid] = open("/proc/%s/environ" % pid, "rb").read().decode("utf-8", "replace")
    except OSError: pass
def leaks(text): return [v for v in P["secret_values"] if v in text]
emit({"names": [n for n in P["secret_names"] if n in own], "values": leaks(json.dumps(own)),
      "self_environ": leaks(selfenv), "others": {p: leaks(t) for p, t in others.items() if leaks(t)},
      "jpy_parent_pid": own.get("JPY_PARENT_PID"), "env_keys": sorted(own)})
'''


def test_environment_has_no_secrets(runner):
    """JUPYTER_TOKEN / AWS_SECRET_ACCESS_KEY of the caller are not in os.environ, /proc/self/environ, or any
    other sandboxed process' environ (PID 1 is its own test)."""
    r = runner.probe(ENV)
    assert r["names"] == [] and r["values"] == [], r
    assert r["self_environ"] == [] and r["others"] == {}, r
    # The launcher may set JPY_PARENT_PID to 0/1 (ipykernel then starts no parent poller); a host PID
    # would both leak and make ipykernel exit.
    assert r["jpy_parent_pid"] in (None, "0", "1"), r


HOST_PIDS = r'''
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
hits = []
for pid in pids:
    try:
        cmd = read_text("/proc/%d/cmdline" % pid).split("\0")
    except OSError: continue
    if P["sleep_arg"] in cmd: hits.append(pid)
emit({"pids": pids, "hits": hits,
      "sleepers_visible": {n: os.path.exists("/proc/%d" % p) for n, p in P["sleepers"].items()}})
'''


def test_host_pids_invisible(runner):
    """Host processes (sleepers of root and of the test user) are not in the sandbox's /proc."""
    r = runner.probe(HOST_PIDS)
    assert r["hits"] == [], r
    assert len(r["pids"]) < 16 and max(r["pids"]) < 200, r
    small = {n: p for n, p in runner.ctx.sec.sleeper_pids().items() if p in r["pids"]}
    assert not any(v for n, v in r["sleepers_visible"].items() if n not in small), r


PROC_SYS = r'''
files = ["/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
         "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/domainname", "/proc/sys/fs/file-max"]
res = {f: attempt(lambda f=f: os.close(os.open(f, os.O_WRONLY))) for f in files}
res["ro"] = bool(os.statvfs("/proc/sys").f_flag & os.ST_RDONLY)
res["core_pattern"] = attempt(read_text, "/proc/sys/kernel/core_pattern")
emit(res)
'''


def test_proc_sys_not_writable(runner):
    """/proc/sys is read-only (even the knobs of the sandbox's own namespaces)."""
    r = runner.probe(PROC_SYS)
    assert r["ro"] is True, r
    for f, v in r.data.items():
        if f.startswith("/proc/sys/") and v != ["err", "ENOENT"]:
            assert v[0] == "err" and v[1] in ("EROFS", "EACCES", "EPERM"), (f, r)


SYSRQ = r'''
# Opening for writing is enough: nothing is ever written.
res = {p: attempt(lambda p=p: os.close(os.open(p, os.O_WRONLY))) for p in
       ("/proc/sysrq-trigger", "/proc/sys/kernel/sysrq", "/proc/kcore", "/proc/kmsg")}
res["kcore_read"] = attempt(lambda: open("/proc/kcore", "rb").read(16))
res["kmsg_read"] = attempt(lambda: (os.set_blocking(os.open("/proc/kmsg", os.O_RDONLY | os.O_NONBLOCK), False)))
emit(res)
'''


def test_sysrq_trigger_and_kernel_files(runner):
    """/proc/sysrq-trigger cannot be opened for writing; /proc/kcore and /proc/kmsg cannot be read."""
    r = runner.probe(SYSRQ)
    for p in ("/proc/sysrq-trigger", "/proc/sys/kernel/sysrq"):
        assert r[p][0] == "err" and r[p][1] in ("EROFS", "EACCES", "EPERM", "ENOENT"), (p, r)
    assert r["kcore_read"][0] != "ok" and r["kmsg_read"][0] != "ok", r


SIGNALS = r'''
import signal
res = {}
for name, pid in P["sleepers"].items():
    res[name] = {"visible": os.path.exists("/proc/%d" % pid),
                 "sig0": attempt(os.kill, pid, 0), "sigkill": attempt(os.kill, pid, signal.SIGKILL),
                 "pidfd": sc("pidfd_open", pid, 0), "pgrp": attempt(os.killpg, pid, signal.SIGKILL)}
emit(res)
'''


def test_signal_host_process(runner):
    """kill(host_pid, SIGKILL) gives ESRCH for host processes of root and of the caller's own uid."""
    sleepers = runner.ctx.sec.sleeper_pids()
    r = runner.probe(SIGNALS)
    for name, pid in sleepers.items():
        v = r[name]
        if v["visible"] and pid < 200:
            continue  # a sandbox pid with the same number: not a host process
        assert v["sig0"] == ["err", "ESRCH"] and v["sigkill"] == ["err", "ESRCH"], (name, r)
        assert v["pidfd"][1] == "ESRCH" and v["pgrp"] == ["err", "ESRCH"], (name, r)
        assert pid_alive(pid), f"host process {name}:{pid} was killed from the sandbox"


PTRACE_HOST = r'''
PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206
res = {}
for name, pid in P["sleepers"].items():
    res[name] = {"seize": sc("ptrace", PTRACE_SEIZE, pid, 0, 0), "attach": sc("ptrace", PTRACE_ATTACH, pid, 0, 0),
                 "mem": attempt(lambda: open("/proc/%d/mem" % pid, "rb").close())}
emit(res)
'''


def _tracer(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return -1


def test_ptrace_host_process(runner):
    """ptrace of a host process (same uid too) fails with ESRCH; the host process is not traced."""
    r = runner.probe(PTRACE_HOST)
    for name, pid in runner.ctx.sec.sleeper_pids().items():
        v = r[name]
        assert_errno(v["seize"], "ESRCH", f"{name} seize")
        assert_errno(v["attach"], "ESRCH", f"{name} attach")
        assert v["mem"][0] == "err", (name, r)
        assert pid_alive(pid) and _tracer(pid) == 0


INIT_PTRACE = r'''
import subprocess, signal
# Each ptrace attempt in a child process that exits at once (a tracer's exit detaches); an ATTACH that
# worked is waited for and detached without a signal, and init gets a SIGCONT, so init is never left stopped.
child = r"""
import ctypes, errno, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE = 16, 17, 0x4206
op = PTRACE_SEIZE if sys.argv[1] == "seize" else PTRACE_ATTACH
r = libc.ptrace(op, 1, 0, 0)
print("OK" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?"), flush=True)
if r == 0 and op == PTRACE_ATTACH:
    for _ in range(200):
        if os.waitpid(1, os.WNOHANG | 0x40000000)[0]: break   # __WALL: the attach stop
        time.sleep(0.01)
    libc.ptrace(PTRACE_DETACH, 1, 0, 0)
"""
res = {}
for op in ("seize", "attach"):
    p = subprocess.run([sys.executable, "-c", child, op], stdout=subprocess.PIPE, text=True, timeout=20)
    res[op] = p.stdout.strip()
res["sigcont"] = attempt(os.kill, 1, signal.SIGCONT)

NR.update(process_vm_readv=310, pidfd_getfd=438)
buf = ctypes.create_string_buffer(64)
local = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), ctypes.c_void_p(64))
remote = (ctypes.c_void_p * 2)(ctypes.c_void_p(0x400000), ctypes.c_void_p(64))
res["vm_readv"] = sc("process_vm_readv", 1, local, 1, remote, 1, 0)
pidfd = sc("pidfd_open", 1, 0)
res["pidfd_getfd"] = sc("pidfd_getfd", pidfd[0], 0, 0) if pidfd[0] >= 0 else pidfd

def read_mem():
    with open("/proc/1/mem", "rb") as f: return len(f.read(1))
res["mem"] = attempt(read_mem)
res["environ"] = attempt(lambda: len(open("/proc/1/environ", "rb").read()))
res["root_link"] = attempt(os.readlink, "/proc/1/root")
res["root_list"] = attempt(os.listdir, "/proc/1/root")
res["root_stat"] = attempt(lambda: os.stat("/proc/1/root/").st_ino)
res["cwd_list"] = attempt(os.listdir, "/proc/1/cwd")
res["fd_link"] = attempt(os.readlink, "/proc/1/fd/0")
res["fd_open"] = attempt(lambda: os.close(os.open("/proc/1/fd/0", os.O_RDONLY)))
res["init_status"] = [l for l in read_text("/proc/1/status").splitlines() if l.startswith(("TracerPid", "State"))]
# The program itself stays dumpable (execve resets the flag it inherits from init): its own /proc works.
res["self_dumpable"] = _libc.prctl(3, 0, 0, 0, 0)   # PR_GET_DUMPABLE
res["self_mem"] = attempt(lambda: open("/proc/self/mem", "rb").close())
res["self_root"] = attempt(os.readlink, "/proc/self/root")
emit(res)
'''


def test_init_not_ptraceable(runner):
    """The program cannot reach into the sandbox's init (PID 1, a copy of the launcher holding the plan):
    PTRACE_SEIZE and PTRACE_ATTACH fail, and so do process_vm_readv, pidfd_getfd and /proc/1/{mem,environ,
    root,cwd,fd/N}; the init is left running, untraced. The program itself is still dumpable."""
    r = runner.probe(INIT_PTRACE)
    assert r["seize"] == "EPERM" and r["attach"] == "EPERM", r
    assert r["vm_readv"] == [-1, "EPERM"], r
    assert r["pidfd_getfd"] == [-1, "EPERM"], r
    # (A root caller's program may still list the numbers in /proc/1/fd: a non-dumpable process's /proc
    # files belong to uid 0, which that program is. What the descriptors are stays hidden.)
    for k in ("mem", "environ", "root_link", "root_list", "root_stat", "cwd_list", "fd_link", "fd_open"):
        assert r[k] == ["err", "EACCES"], (k, r)
    assert "TracerPid:\t0" in r["init_status"], r
    assert not any(line.startswith("State:") and line.split()[1] in ("T", "t") for line in r["init_status"]), r
    assert r["self_dumpable"] == 1 and r["self_mem"][0] == "ok" and r["self_root"] == ["ok", "/"], r


FDS = r'''
res = []
for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
    try:
        target = os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        continue
    ent = {"fd": fd, "target": target}
    if target.startswith("socket:"):
        try:
            s = socket.socket(fileno=os.dup(fd))
            ent["family"] = int(s.family)
            ent["name"] = s.getsockname()
            s.close()
        except OSError as e:
            ent["err"] = ename(e.errno)
    res.append(ent)
emit({"fds": res})
'''


def test_no_host_descriptors_inherited(runner):
    """No descriptor of the host reaches the sandboxed program: not a file the caller passed (isolate gets
    an fd on a hidden secret and a listening TCP socket of the host netns), not the launcher's host-side
    sockets (the kernel's 5 TCP ports on 127.0.0.1)."""
    pass_fds, ports = (), []
    extra = []
    if runner.kind == "isolate":
        f0 = os.open(runner.ctx.sec.hidden_secret, os.O_RDONLY)
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        ports = [lst.getsockname()[1]]
        extra = [fcntl.fcntl(f0, fcntl.F_DUPFD, 60), fcntl.fcntl(lst.fileno(), fcntl.F_DUPFD, 61)]
        os.close(f0)
        pass_fds = tuple(extra)
    else:
        info = json.loads(Path(runner.kernel().info["connection_file"]).read_text())
        ports = [info[k] for k in info if k.endswith("_port")]
    try:
        r = runner.probe(FDS, params={"ports": ports}, **({"pass_fds": pass_fds} if pass_fds else {}))
    finally:
        for fd in extra:
            os.close(fd)
        if runner.kind == "isolate":
            lst.close()
    hidden = runner.ctx.sec.hidden
    for ent in r["fds"]:
        assert str(hidden) not in ent["target"] and "secret" not in ent["target"], r
        if ent.get("family") in (socket.AF_INET, socket.AF_INET6):
            assert ent["name"][1] not in ports, r
    assert not {e["fd"] for e in r["fds"]} & {60, 61}, r


IPC = r'''
_libc.shmget.restype = ctypes.c_int
_libc.shmat.restype = ctypes.c_long
r = _libc.shmget(P["sysv_key"], 0, 0)
e = ctypes.get_errno()
emit({"shmget": [r, ename(e) if r == -1 else "OK"], "shmat_by_id": attempt(lambda: _libc.shmat(P["sysv_id"], None, 0)),
      "listed": str(P["sysv_key"]) in read_text("/proc/sysvipc/shm") if os.path.exists("/proc/sysvipc/shm") else False,
      "posix_shm": os.path.lexists(P["posix_shm"]), "dev_shm": os.listdir("/dev/shm")})
'''


def test_host_ipc_objects_invisible(runner):
    """A SysV shared memory segment and a POSIX shm file of the host are invisible (own IPC namespace,
    private /dev/shm)."""
    if runner.ctx.sec.sysv_id < 0:
        import pytest
        pytest.skip("could not create a SysV segment on the host")
    r = runner.probe(IPC)
    assert r["shmget"] == [-1, "ENOENT"], r
    assert r["shmat_by_id"] == ["ok", -1], r      # the host's segment id means nothing inside
    assert r["listed"] is False and r["posix_shm"] is False, r
    assert os.path.basename(str(runner.ctx.sec.posix_shm)) not in r["dev_shm"], r
