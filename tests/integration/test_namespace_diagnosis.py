"""When user namespaces are unavailable, isolate says which setting blocks
them and how to fix it, in one line, with status 125. Two real ways to
block them without touching the host: user.max_user_namespaces=0 inside a
throw-away user namespace (the sysctl is per namespace), and a seccomp
filter that denies CLONE_NEWUSER (isolate's own, as a container's would)."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def one_line(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_max_user_namespaces_zero_is_named(sb):
    if not shutil.which("unshare"):
        pytest.skip("unshare(1) missing")
    script = f"echo 0 > /proc/sys/user/max_user_namespaces && exec {sb.binary} -- /bin/true"
    cmd = ["unshare", "-Ur", "sh", "-c", script]
    if sb.mode == "user":
        cmd = ["setpriv", f"--reuid={sb.user}", f"--regid={sb.user}", "--clear-groups", "--", *cmd]
    r = subprocess.run(cmd, cwd=sb.workdir, env=sb.env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 125, (r.returncode, r.stderr)
    line = one_line(r)
    assert "user.max_user_namespaces is 0" in line and "sysctl -w user.max_user_namespaces=" in line, line


def test_seccomp_blocked_namespaces_are_diagnosed(sb):
    # The outer sandbox's filter denies CLONE_NEWUSER with EPERM, as a
    # container runtime's default profile does.
    bindir = sb.binary.parent
    # --chdir: the outer sandbox does not mount the working directory and
    # would say so in a note of its own; the line checked is the inner one's.
    r = sb.run("-m", f"ro:{bindir}", "--chdir", str(bindir), "--", str(sb.binary), "--", "/bin/true")
    assert r.returncode == 125, r
    line = one_line(r)
    assert "create namespaces" in line and "Operation not permitted" in line, line
    assert "seccomp" in line and "isolated-kernel doctor" in line, line
