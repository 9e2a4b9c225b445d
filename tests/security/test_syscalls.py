"""Privileges and the syscall filter: every syscall the filter denies (raw,
through ctypes syscall()), capabilities, setuid, hostname, clock, terminal
injection (TIOCSTI, TIOCLINUX), nested user namespaces, and controls showing
that --seccomp=off and --allow-userns really change the outcome.

A denied call must fail with the errno the filter defines (EPERM; ENOSYS for
clone3, EAFNOSUPPORT for AF_VSOCK; see launcher/apply/seccomp.cpp) and must
NOT kill the process: the probe prints its verdict after the call.
"""

from __future__ import annotations

import pytest

SANDBOX_OPTS: list[str] = []

CLONE_NEWUSER = 0x10000000
SIGCHLD = 17

# name -> (syscall, args, expected errno). Arguments are chosen so that the
# call would be harmless even if it got through the filter.
DENIED = {
    "keyctl": ("keyctl", [0, -3, 0], "EPERM"),                       # KEYCTL_GET_KEYRING_ID(session)
    "add_key": ("add_key", ["user", "ik-probe", "x", 1, -3], "EPERM"),
    "request_key": ("request_key", ["user", "ik-probe-none", None, 0], "EPERM"),
    "bpf": ("bpf", [0, None, 0], "EPERM"),
    "perf_event_open": ("perf_event_open", [None, 0, -1, -1, 0], "EPERM"),
    "userfaultfd": ("userfaultfd", [0], "EPERM"),
    "kexec_load": ("kexec_load", [0, 0, None, 0], "EPERM"),
    "kexec_file_load": ("kexec_file_load", [-1, -1, 0, None, 0], "EPERM"),
    "init_module": ("init_module", [None, 0, ""], "EPERM"),
    "finit_module": ("finit_module", [-1, "", 0], "EPERM"),
    "delete_module": ("delete_module", ["ik_probe_none", 0o4000], "EPERM"),
    "open_by_handle_at": ("open_by_handle_at", [-100, None, 0], "EPERM"),
    "name_to_handle_at": ("name_to_handle_at", [-100, "/", None, None, 0], "EPERM"),
    "mount": ("mount", [None, "/nonexistent-ik", None, 0, None], "EPERM"),
    "umount2": ("umount2", ["/nonexistent-ik", 0], "EPERM"),
    "pivot_root": ("pivot_root", ["/nonexistent-ik", "/nonexistent-ik"], "EPERM"),
    "chroot": ("chroot", ["/"], "EPERM"),
    "swapon": ("swapon", ["/nonexistent-ik", 0], "EPERM"),
    "swapoff": ("swapoff", ["/nonexistent-ik"], "EPERM"),
    "reboot": ("reboot", [0, 0, 0, None], "EPERM"),                 # bad magic: EINVAL if unfiltered
    "acct": ("acct", [None], "EPERM"),
    "syslog": ("syslog", [10, None, 0], "EPERM"),                     # SYSLOG_ACTION_SIZE_BUFFER
    "quotactl": ("quotactl", [0, None, 0, None], "EPERM"),
    "vhangup": ("vhangup", [], "EPERM"),
    "setns": ("setns", [-1, 0], "EPERM"),
    "fsopen": ("fsopen", ["tmpfs", 0], "EPERM"),
    "fsmount": ("fsmount", [-1, 0, 0], "EPERM"),
    "fspick": ("fspick", [-100, "/", 0], "EPERM"),
    "move_mount": ("move_mount", [-1, "", -1, "", 0], "EPERM"),
    "open_tree": ("open_tree", [-100, "/", 0], "EPERM"),
    "mount_setattr": ("mount_setattr", [-1, "", 0, None, 0], "EPERM"),
    "io_uring_setup": ("io_uring_setup", [1, "IOURING_PARAMS"], "EPERM"),
    "io_uring_enter": ("io_uring_enter", [-1, 0, 0, 0, None, 0], "EPERM"),
    "io_uring_register": ("io_uring_register", [-1, 0, None, 0], "EPERM"),
    "personality_addr_no_randomize": ("personality", [0x0040000], "EPERM"),
    "personality_read_implies_exec": ("personality", [0x0400000], "EPERM"),
    "personality_mmap_page_zero": ("personality", [0x0100000], "EPERM"),
    "personality_addr_compat_layout": ("personality", [0x0200000], "EPERM"),
    "unshare_newuser": ("unshare", [CLONE_NEWUSER], "EPERM"),
    "unshare_newuser_newns": ("unshare", [CLONE_NEWUSER | 0x00020000], "EPERM"),
    "clone3": ("clone3", [None, 0], "ENOSYS"),                      # glibc falls back to clone()
    "socket_af_vsock": ("socket", [40, 1, 0], "EAFNOSUPPORT"),
}

DENIED_PROBE = r'''
name, args = P["call"], P["args"]
args = [ctypes.create_string_buffer(120) if a == "IOURING_PARAMS" else a for a in args]
pers_before = sc("personality", 0xffffffff)[0]
r = sc(name, *args)
if name == "socket" and r[0] >= 0: os.close(r[0])
if name == "io_uring_setup" and r[0] >= 0: os.close(r[0])
emit({"result": r, "pid_still_here": sc("getpid")[0] == os.getpid(),
      "personality_unchanged": sc("personality", 0xffffffff)[0] == pers_before})
'''


@pytest.mark.parametrize("probe", sorted(DENIED))
def test_denied_syscall(runner, probe):
    call, args, expected = DENIED[probe]
    r = runner.probe(DENIED_PROBE, params={"call": call, "args": args})
    assert r["result"][0] == -1 and r["result"][1] == expected, (probe, r)
    assert r["pid_still_here"] and r["personality_unchanged"], r


CLONE_NEWUSER_PROBE = r'''
# Raw clone() without CLONE_VM is a fork; a child that did get created leaves at once. The GIL is kept
# across the call: a child of a threaded kernel could otherwise wait forever for a GIL held by a thread
# that does not exist in it.
r = sc("clone", P["flags"], 0, 0, 0, 0, keep_gil=True)
if r[0] == 0:
    os._exit(0)
if r[0] > 0:
    os.waitpid(r[0], 0)
emit({"clone": r})
'''


def test_clone_newuser_denied(runner):
    """clone(CLONE_NEWUSER) fails with EPERM (and does not kill the caller)."""
    r = runner.probe(CLONE_NEWUSER_PROBE, params={"flags": CLONE_NEWUSER | SIGCHLD})
    assert r["clone"] == [-1, "EPERM"], r


def test_clone_without_newuser_still_works(runner):
    """Control: a plain fork-like clone() passes the filter (the rule matches only CLONE_NEWUSER)."""
    r = runner.probe(CLONE_NEWUSER_PROBE, params={"flags": SIGCHLD})
    assert r["clone"][0] > 0, r


CAPS = r'''
def fields(path):
    out = {}
    for line in read_text(path).splitlines():
        k, _, v = line.partition(":")
        if k.startswith("Cap") or k in ("NoNewPrivs", "Seccomp", "Uid", "Gid", "Groups"):
            out[k] = v.strip()
    return out
PR_GET_NO_NEW_PRIVS, PR_CAPBSET_READ, PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET = 39, 23, 47, 1
_libc.prctl.restype = ctypes.c_int
emit({"self": fields("/proc/self/status"), "init": attempt(fields, "/proc/1/status"),
      "nnp": _libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
      "bnd_sys_admin": _libc.prctl(PR_CAPBSET_READ, 21, 0, 0, 0),
      "raise_ambient": [_libc.prctl(PR_CAP_AMBIENT, 2, 21, 0, 0), ename(ctypes.get_errno())]})
'''


def test_capabilities_empty_nnp_seccomp(runner):
    """CapEff/CapPrm/CapBnd/CapAmb/CapInh are all 0, NoNewPrivs 1, Seccomp 2 -- for the program and for init,
    also as uid 0 inside (--root)."""
    for extra in ([], ["--root"]):
        r = runner.probe(CAPS, opts=[*SANDBOX_OPTS, *extra])
        for who in ("self", "init"):
            f = r[who] if who == "self" else r["init"][1]
            if who == "init" and r["init"][0] != "ok":
                continue
            for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                assert int(f[k], 16) == 0, (who, k, extra, r)
            assert f["NoNewPrivs"] == "1" and f["Seccomp"] == "2", (who, extra, r)
        assert r["nnp"] == 1 and r["bnd_sys_admin"] == 0, (extra, r)
        assert r["raise_ambient"][0] == -1, (extra, r)


NOSUID = r'''
import shutil
dirs = ["/", "/usr", "/tmp", P["home"], os.getcwd(), "/dev/shm", "/etc"]
emit({d: bool(os.statvfs(d).f_flag & os.ST_NOSUID) for d in dirs if os.path.isdir(d)})
'''


def test_every_mount_is_nosuid(runner):
    """Setuid binaries cannot elevate: every mount is nosuid (and NoNewPrivs is set, above)."""
    r = runner.probe(NOSUID)
    assert r.data and all(r.data.values()), r


SETUID = r'''
uid, gid = os.getuid(), os.getgid()
other = 0 if uid != 0 else 65534
res = {"setuid": attempt(os.setuid, other), "seteuid": attempt(os.seteuid, other),
       "setresuid": attempt(os.setresuid, other, other, other), "setgid": attempt(os.setgid, 0 if gid else 65534),
       "setgroups": attempt(os.setgroups, [0, 65534]),
       "after": [os.getresuid(), os.getresgid(), os.getgroups()]}
emit(res)
'''


def test_setuid_to_other_uid_fails(runner):
    """setuid/seteuid/setresuid/setgid/setgroups to another id fail; ids are unchanged."""
    r = runner.probe(SETUID)
    uid, gid = runner.ctx.ident.uid, runner.ctx.ident.gid
    for k in ("setuid", "seteuid", "setresuid", "setgid", "setgroups"):
        assert r[k][0] == "err" and r[k][1] in ("EPERM", "EINVAL"), (k, r)
    assert r["after"][0] == [uid, uid, uid] and r["after"][1] == [gid, gid, gid], r


HOSTNAME = r'''
before = os.uname().nodename
res = {"sethostname": attempt(socket.sethostname, "ik-pwned"),
       "raw_sethostname": sc("sethostname", "ik-pwned", 8), "setdomainname": sc("setdomainname", "ik-pwned", 8),
       "before": before, "after": os.uname().nodename}
emit(res)
'''


def test_hostname_change_fails(runner):
    r = runner.probe(HOSTNAME)
    assert r["sethostname"] == ["err", "EPERM"], r
    assert r["raw_sethostname"] == [-1, "EPERM"] and r["setdomainname"] == [-1, "EPERM"], r
    assert r["after"] == r["before"] != socket_hostname()


def socket_hostname():
    import socket
    return socket.gethostname()


SETTIME = r'''
class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
class timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]
now = time.time()
ts = timespec(int(now), 0)
tv = timeval(int(now), 0)
res = {"clock_settime": sc("clock_settime", 0, ctypes.byref(ts)),
       "settimeofday": sc("settimeofday", ctypes.byref(tv), None),
       "libc_stime": attempt(time.clock_settime, time.CLOCK_REALTIME, now)}
emit(res)
'''


def test_set_time_fails(runner):
    """Setting the system clock fails with EPERM."""
    r = runner.probe(SETTIME)
    assert r["clock_settime"] == [-1, "EPERM"] and r["settimeofday"] == [-1, "EPERM"], r
    assert r["libc_stime"] == ["err", "EPERM"], r


TIOCSTI_PROBE = r'''
import termios
c = ctypes.c_char(b"x")
res = {"isatty0": os.isatty(0), "tty_open": attempt(lambda: os.close(os.open("/dev/tty", os.O_RDWR))),
       "sid": os.getsid(0) == os.getpid()}
for label, req in (("plain", termios.TIOCSTI), ("high_bits", 0x100000000 | termios.TIOCSTI),
                   ("all_high", 0xffffffff00000000 | termios.TIOCSTI)):
    res[label] = sc("ioctl", 0, req, ctypes.byref(c))
    # The sandbox's own pty as well.
    try:
        m = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
        _libc.grantpt(m); _libc.unlockpt(m)
        _libc.ptsname.restype = ctypes.c_char_p
        s = os.open(_libc.ptsname(m).decode(), os.O_RDWR | os.O_NOCTTY)
        res[label + "_own_pty"] = sc("ioctl", s, req, ctypes.byref(c))
        os.close(s); os.close(m)
    except OSError as e:
        res[label + "_own_pty"] = ["open", ename(e.errno)]
emit(res)
'''


def test_tiocsti_cannot_inject_into_terminal(runner):
    """TIOCSTI on the caller's terminal (stdin is a host pty that is the caller's controlling tty), also with
    the upper 32 bits of the request set, fails with EPERM; nothing arrives in the host pty's input queue."""
    r = runner.probe(TIOCSTI_PROBE, pty=True)
    # isolate passes its stdin through (--no-pty when not on a terminal); a
    # kernel never holds the caller's terminal at all (/dev/null and pipes,
    # docs/security.md), which test_kernel_stdio.py checks in depth.
    assert r["isatty0"] is (runner.kind != "kernel"), r
    for label in ("plain", "high_bits", "all_high"):
        assert r[label] == [-1, "EPERM"], (label, r)
        assert r[label + "_own_pty"] == [-1, "EPERM"], (label, r)
    assert r["tty_open"][0] == "err", r       # no controlling terminal inside
    assert r.pty_pending == {"pending": 0, "data": ""}, r


def test_control_tiocsti_detected_without_sandbox(runner):
    """Control for the test above: the same probe run directly on the host (no sandbox) under the same kind
    of pty does inject a character, and the host-side check sees it."""
    import os
    import subprocess
    from pathlib import Path
    from kit.common import PYTHON
    from kit.security import parse_verdict, pty_pending, wrap_probe
    if runner.kind == "kernel":
        pytest.skip("host-side control, independent of the runner")
    legacy = Path("/proc/sys/dev/tty/legacy_tiocsti")
    if legacy.exists() and legacy.read_text().strip() == "0":
        pytest.skip("TIOCSTI disabled on this host (dev.tty.legacy_tiocsti=0)")
    import fcntl
    import termios
    import tty
    master, slave = os.openpty()
    tty.setraw(slave)
    code = wrap_probe("emit({'r': sc('ioctl', 0, 0x5412, ctypes.byref(ctypes.c_char(b'x')))})", runner.ctx.params())
    try:
        p = subprocess.run(runner.ctx.ident.prefix() + [PYTHON, "-c", code], stdin=slave, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30, start_new_session=True,
                           preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        pending = pty_pending(slave)
    finally:
        os.close(slave)
        os.close(master)
    assert parse_verdict(p.stdout) == {"r": [0, "OK"]}, (p.stdout, p.stderr)
    assert pending == {"pending": 1, "data": "x"}


TIOCLINUX_PROBE = r'''
TIOCLINUX = 0x541C
sub = ctypes.c_char(b"\x0b")   # TIOCL_GETSHIFTSTATE-ish subcode, harmless
res = {"plain": sc("ioctl", 0, TIOCLINUX, ctypes.byref(sub)),
       "high_bits": sc("ioctl", 0, 0x100000000 | TIOCLINUX, ctypes.byref(sub))}
emit(res)
'''


def test_tioclinux_denied(runner):
    r = runner.probe(TIOCLINUX_PROBE, pty=True)
    assert r["plain"] == [-1, "EPERM"] and r["high_bits"] == [-1, "EPERM"], r
    assert r.pty_pending == {"pending": 0, "data": ""}, r


# ---------------------------------------------------------------- controls

SECCOMP_OFF = r'''
st = {l.split(":")[0]: l.split(":")[1].strip() for l in read_text("/proc/self/status").splitlines() if ":" in l}
emit({"keyctl": sc("keyctl", 0, -3, 0), "personality": sc("personality", 0x0040000),
      "seccomp": st.get("Seccomp")})
'''


def test_seccomp_off_really_disables_the_filter(runner):
    """Control: with --seccomp off, keyctl no longer fails with EPERM (its errno changes), Seccomp is 0.

    Together with test_denied_syscall[keyctl] this shows the EPERM comes from the filter."""
    on = runner.probe(SECCOMP_OFF)
    off = runner.probe(SECCOMP_OFF, opts=["--seccomp", "off"])
    assert on["keyctl"] == [-1, "EPERM"] and on["seccomp"] == "2", on
    assert off["seccomp"] == "0", off
    assert off["keyctl"] != on["keyctl"] and off["keyctl"][1] != "EPERM", off


USERNS = r'''
import subprocess, sys
child = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
r = libc.unshare(0x10000000)
print(r, ctypes.get_errno())
if r == 0:
    print(open("/proc/self/uid_map").read().strip())
"""
p = subprocess.run([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
u = subprocess.run(["unshare", "-U", "true"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
i = subprocess.run(["unshare", "-U", "id", "-u"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
emit({"child": p.stdout.split("\n"), "unshare_cmd": [u.returncode, u.stdout[-200:]],
      "unshare_id": [i.returncode, i.stdout.strip()[-200:]]})
'''


def test_nested_userns_denied_by_default(runner):
    r = runner.probe(USERNS)
    assert r["child"][0] == "-1 1", r
    assert r["unshare_cmd"][0] != 0, r


def test_allow_userns_permits_unshare(runner):
    """Control: --allow-userns lets a process create a nested user namespace (unshare -U works), in which
    the program is the overflow uid (nothing is mapped)."""
    r = runner.probe(USERNS, opts=["--allow-userns"])
    assert r["child"][0] == "0 0", r
    assert r["unshare_cmd"][0] == 0, r
    assert r["unshare_id"] == [0, "65534"], r
