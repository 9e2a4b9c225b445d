"""What every test kit shares: the constants, the test user, how a command runs
as that user (setpriv), the caller's base environment, the host process scan
and the polling helpers. One copy of each; the kits for `isolate`
(kit/isolate.py), the launcher (kit/kernel.py), `isolated-kernel`
(kit/cli.py), the browsers (kit/browser.py) and the security harness
(kit/security.py) build on it.

This module imports neither pytest nor anything from the tests, so the client
scripts that run as the test user can import it too.

Environment:
  IK_TEST_USER  the unprivileged user (default: iktest)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

KIT = Path(__file__).resolve().parent
TESTS = KIT.parent
REPO = TESTS.parent
PYTHON = "/usr/bin/python3"
TEST_USER = os.environ.get("IK_TEST_USER", "iktest")
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"


# --------------------------------------------------------------- who runs it


def setpriv_prefix(user: str) -> list[str]:
    """The command prefix that runs what follows as USER (uid, gid, no supplementary groups)."""
    return [SETPRIV, f"--reuid={user}", f"--regid={user}", "--clear-groups", "--"]


def ensure_test_user(create: bool = True) -> pwd.struct_passwd | None:
    """The passwd entry of the test user; created (useradd -m) when missing and we are root.
    Its home exists and is its own."""
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        if not create or os.geteuid() != 0:
            return None
        # One creator at a time: the pytest-xdist workers (scripts/test) all get here
        # at their start, and a second useradd would fail on the first one's user.
        with open("/tmp/.ik-test-user.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                pw = pwd.getpwnam(TEST_USER)
            except KeyError:
                subprocess.run(["useradd", "-m", TEST_USER], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                pw = pwd.getpwnam(TEST_USER)
    home = Path(pw.pw_dir)
    if os.geteuid() == 0 and not home.is_dir():
        home.mkdir(parents=True, mode=0o755)
        os.chown(home, pw.pw_uid, pw.pw_gid)
    return pw


def resolve_mode(mode: str, test_user: pwd.struct_passwd | None) -> tuple[str, pwd.struct_passwd]:
    """("root" | "user" | "self", passwd entry) for a test run in MODE "root" or "user".

    As root, "user" is the test user (through setpriv); not as root, "root" is
    impossible and "user" is the caller itself ("self"). Raises LookupError
    (the reason to skip) when the mode cannot run here."""
    if mode == "root":
        if os.geteuid() != 0:
            raise LookupError("root mode needs the tests to run as root")
        return "root", pwd.getpwuid(0)
    if os.geteuid() != 0:
        return "self", pwd.getpwuid(os.geteuid())
    if test_user is None:
        raise LookupError(f"user {TEST_USER} missing and cannot be created (useradd -m {TEST_USER})")
    return "user", test_user


def user_can(user: str, test: str, *paths: Path | str) -> bool:
    """`test TEST PATH` succeeds as USER for every PATH (e.g. "-r", "-x")."""
    script = 'op=$1; shift; for p; do test "$op" "$p" || exit 1; done'
    r = subprocess.run(setpriv_prefix(user) + ["/bin/sh", "-c", script, "sh", test, *map(str, paths)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


def base_env(user: str, home: Path | str, extra: dict | None = None) -> dict:
    """The clean environment a command of USER starts with, then EXTRA (None removes a key)."""
    e = {
        "PATH": SAFE_PATH,
        "HOME": str(home),
        "USER": user,
        "LOGNAME": user,
        "SHELL": "/bin/sh",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }
    return merge_env(e, extra)


def merge_env(env: dict, extra: dict | None) -> dict:
    """ENV updated by EXTRA; a None value removes the key, other values become strings."""
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v if isinstance(v, str) else str(v)
    return env


# --------------------------------------------------------------- host processes


def _cmdlines(exclude=()):
    """(pid, raw command line) of every host process but this one and EXCLUDE."""
    skip = {os.getpid(), *exclude}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                yield int(entry), f.read()
        except OSError:
            continue


def processes_matching(markers, exclude=()) -> list[tuple[int, str]]:
    """(pid, cmdline) of live host processes whose command line contains any marker."""
    enc = [m.encode() for m in markers if m]
    found = []
    for pid, raw in _cmdlines(exclude):
        cmd = raw.replace(b"\0", b" ")
        if any(m in cmd for m in enc):  # zombies have an empty cmdline
            found.append((pid, cmd.decode(errors="replace").strip()))
    return found


def pids_with_marker(marker: str, exclude=frozenset()) -> list[int]:
    """PIDs of host processes whose command line (NUL-separated, as is) contains MARKER."""
    return [pid for pid, raw in _cmdlines(exclude) if marker.encode() in raw]


def pid_alive(pid: int) -> bool:
    """True while PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_quietly(pids) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def kill_matching(markers) -> list[tuple[int, str]]:
    """SIGKILLs the processes matching MARKERS; returns what it found."""
    found = processes_matching(markers)
    kill_quietly(pid for pid, _ in found)
    return found


def mount_table() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return set(f.read().splitlines())


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def install_pool_waiter(prefix: Path) -> Path:
    """Copies share/pool/pool_waiter.py to PREFIX/share/pool/, where a
    launcher in PREFIX/bin looks for it (bin/../share/pool/), readable by
    the unprivileged test user; returns the copy."""
    share = prefix / "share" / "pool"
    share.mkdir(parents=True, exist_ok=True)
    for d in (prefix / "share", share):
        d.chmod(0o755)
    waiter = share / "pool_waiter.py"
    shutil.copy2(REPO / "share" / "pool" / "pool_waiter.py", waiter)
    waiter.chmod(0o644)
    return waiter


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------- waiting


def wait_until(pred, timeout: float, step: float = 0.05):
    """Polls PRED until it returns something true or TIMEOUT s pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def wait_for(pred, timeout: float, what: str, step: float = 0.2):
    """Like wait_until, but PRED may raise while it is not ready yet (a page loading), and a
    timeout is an AssertionError that names WHAT and the last error."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # element not there yet, page loading...
            last = e
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")
