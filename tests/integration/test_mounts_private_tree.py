"""Mounts from a directory tree the sandbox's user namespace cannot search
(issue 10, item 2).

Root running `isolate` in an unprivileged user's 0700 tree must get its
sandbox (set-up reaches whatever root can: the sandbox maps all of root's
ids to themselves), with the same guarantees as anyone: read-only stays
read-only, also with --root and `mount -o remount,rw`, and the program holds
no capability. Whoever cannot reach a path gets one line naming the host path
they typed and why, never set-up's internal /newroot or /oldroot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"

INTERNAL = ("/newroot", "/oldroot", "/files/")


def _tree(sb, owner_uid: int, owner_gid: int) -> Path:
    """T (mode 0700, owned by `owner`) with T/ro/f (0666), T/ro/rw (0777)
    and T/ro/rw/g, all owned by `owner`."""
    t = sb.workdir / "private"
    (t / "ro" / "rw").mkdir(parents=True)
    (t / "ro" / "f").write_text("orig")
    (t / "ro" / "rw" / "g").write_text("g")
    for p in (t, t / "ro", t / "ro" / "rw", t / "ro" / "f", t / "ro" / "rw" / "g"):
        os.lchown(p, owner_uid, owner_gid)
    (t / "ro" / "rw").chmod(0o777)
    (t / "ro" / "f").chmod(0o666)   # so that only the read-only mount refuses a write
    t.chmod(0o700)
    return t


def _other_user_tree(sb, test_user) -> Path:
    if sb.mode != "root":
        pytest.skip("root in another user's tree: root mode only")
    if test_user is None:
        pytest.skip("no unprivileged test user")
    return _tree(sb, test_user.pw_uid, test_user.pw_gid)


def _mount_options(mountinfo: str) -> dict[str, set[str]]:
    """mount point -> its per-mount options, last mount at a path wins."""
    out = {}
    for line in mountinfo.splitlines():
        f = line.split()
        out[f[4]] = set(f[5].split(","))
    return out


def _no_internal_paths(text: str):
    for p in INTERNAL:
        assert p not in text, text


def test_root_sets_up_in_another_users_0700_tree(sb, test_user):
    # The command, from inside the tree.
    t = _other_user_tree(sb, test_user)
    r = sb.sh(f"cat /proc/self/mountinfo; touch {t}/ro/x", "-m", f". ro:{t}/ro", cwd=t)
    assert "isolate:" not in r.stderr, r
    assert r.returncode == 1, r   # touch fails: the program, root without capabilities, cannot search T
    opts = _mount_options(r.stdout)
    assert "rw" in opts[str(t)] and "ro" in opts[f"{t}/ro"], r
    assert {"nosuid", "nodev"} <= opts[f"{t}/ro"], r
    assert not (t / "ro" / "x").exists()


def test_root_nested_ro_and_rw_from_a_0700_tree(sb, test_user):
    t = _other_user_tree(sb, test_user)
    for order in (f"{t} ro:{t}/ro rw:{t}/ro/rw", f"rw:{t}/ro/rw ro:{t}/ro {t}"):
        r = sb.sh("cat /proc/self/mountinfo", "-m", order)
        assert r.returncode == 0, r
        opts = _mount_options(r.stdout)
        assert "rw" in opts[str(t)], r
        assert "ro" in opts[f"{t}/ro"], r
        assert "rw" in opts[f"{t}/ro/rw"], r
    # The same sources at places the program can reach: ro refuses every
    # write with EROFS, rw takes them (T/ro/rw is 0777).
    code = ("import os, sys, errno\n"
            "for p, fl in (('/srv/in/f', os.O_WRONLY), ('/srv/in/new', os.O_WRONLY | os.O_CREAT),\n"
            "              ('/srv/in/rw/new', os.O_WRONLY | os.O_CREAT),\n"
            "              ('/srv/out/new', os.O_WRONLY | os.O_CREAT)):\n"
            "    try:\n"
            "        os.close(os.open(p, fl, 0o644)); print('OPENED')\n"
            "    except OSError as e:\n"
            "        print(errno.errorcode[e.errno])\n")
    r = sb.run("-m", f"ro:/srv/in={t}/ro rw:/srv/out={t}/ro/rw", "--", "/usr/bin/python3", "-c", code)
    assert r.returncode == 0, r
    assert r.stdout.split() == ["EROFS", "EROFS", "EROFS", "OPENED"], r
    assert (t / "ro" / "f").read_text() == "orig"
    assert not (t / "ro" / "new").exists()
    assert (t / "ro" / "rw" / "new").stat().st_uid == 0   # the program is root, as its caller


def test_root_ro_stays_ro_with_remount_attempts(sb, test_user):
    t = _other_user_tree(sb, test_user)
    for opts in ([], ["--root"]):
        r = sb.sh("for m in /srv/in /srv/in/rw; do mount -o remount,rw $m; mount -o remount,bind,rw $m; "
                  "umount $m; umount -l $m; done; "
                  "echo x > /srv/in/f; touch /srv/in/new /srv/in/rw/new; "
                  "grep ' /srv/in ' /proc/self/mountinfo; echo end",
                  *opts, "-m", f"ro:/srv/in={t}/ro")
        assert r.stdout.split()[-1] == "end", r
        assert "ro" in r.stdout.split()[5].split(","), r
        assert (t / "ro" / "f").read_text() == "orig", r
        assert not (t / "ro" / "new").exists(), r
        assert not (t / "ro" / "rw" / "new").exists(), r


def test_root_full_map_leaves_no_capability(sb, test_user):
    t = _other_user_tree(sb, test_user)
    for opts in ([], ["--root"]):
        r = sb.sh("cat /proc/self/uid_map /proc/self/gid_map; id -u; grep ^Cap /proc/self/status",
                  *opts, "-m", f"ro:{t}/ro")
        assert r.returncode == 0, r
        lines = r.stdout.splitlines()
        # Every id root has, mapped to itself; the program is still uid 0.
        assert lines[0].split() == ["0", "0", "4294967295"], r
        assert lines[1].split() == ["0", "0", "4294967295"], r
        assert lines[2] == "0", r
        caps = dict(line.split(":\t") for line in lines[3:])
        assert set(caps) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}, r
        assert all(int(v, 16) == 0 for v in caps.values()), r


def test_unreachable_path_names_the_host_path(sb, test_user):
    # user mode: iktest cannot reach root's 0700 tree: a usage error from the
    # planner, naming the path typed and the host path.
    # root mode: root without CAP_SETUID/CAP_SETGID gets the one-line map;
    # set-up cannot reach another user's 0700 tree and says where and why.
    if sb.mode == "root":
        if test_user is None:
            pytest.skip("no unprivileged test user")
        t = _tree(sb, test_user.pw_uid, test_user.pw_gid)
    else:
        t = _tree(sb, 0, 0)
    entries = [f"ro:{t}/ro", f"ro:/srv/in={t}/ro", "ro:private/ro"]
    if sb.mode == "root":
        entries.append(f"{t} ro:{t}/ro")   # the mount point is in a bind of T
    for entry in entries:
        typed = entry.split()[-1]
        cmd = sb.argv(["-m", entry, "--", "true"])
        if sb.mode == "root":
            cmd = [SETPRIV, "--bounding-set=-setuid,-setgid", "--", *cmd]
        r = subprocess.run(cmd, cwd=sb.workdir, env=sb.env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        err = r.stderr
        assert r.returncode == (125 if sb.mode == "root" else 2), (cmd, r.returncode, err)
        assert err.count("\n") == 1 and err.startswith("isolate: "), err
        assert typed in err and f"{t}/ro" in err, err
        assert "Permission denied" in err, err
        _no_internal_paths(err)
        if sb.mode == "root":
            assert "CAP_SETUID" in err, err
