"""File-system containment: host files, read-only mounts, mount manipulation,
root escapes, devices, /sys and tmpfs size caps.

Every test runs under isolate and inside an isolated kernel, as root and as
the unprivileged user (see tests/kit/security.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kit.security import assert_errno

# The caller's rodir read-only plus the cwd; every tmpfs capped at 8M.
SANDBOX_OPTS = ["-m", "ro:{rodir} .", "--tmpfs-size", "8M"]

KNOWN_BUGS = {
}


# ---------------------------------------------------------------- host files


HOME_SECRET = r'''
own, text = P["own_home_secret"], P["own_home_secret_text"]
found = []
for root, dirs, files in os.walk(P["home"]):
    for f in files:
        p = os.path.join(root, f)
        try:
            if text in read_text(p): found.append(p)
        except OSError: pass
emit({"home_env": os.environ.get("HOME"), "exists": os.path.lexists(own), "read": attempt(read_text, own),
      "via_proc1_root": attempt(read_text, "/proc/1/root" + own),
      "via_self_root": attempt(read_text, "/proc/self/root" + own),
      "listing": attempt(os.listdir, P["home"]), "found": found})
'''


def test_home_secret_invisible(runner):
    """A private file in the caller's real HOME is not reachable by any path."""
    r = runner.probe(HOME_SECRET)
    name = os.path.basename(runner.ctx.params()["own_home_secret"] or "")
    assert r["home_env"] == str(runner.ctx.ident.home), r
    assert r["exists"] is False, r
    assert r["read"][0] == "err", r
    assert r["via_proc1_root"][0] == "err" and r["via_self_root"][0] == "err", r
    assert r["listing"][0] == "ok" and name not in r["listing"][1], r
    assert r["found"] == [], r


ETC_SECRETS = r'''
paths = ["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers", "/etc/sudoers.d",
         "/etc/ssh", "/etc/security/opasswd", "/etc/krb5.keytab", "/etc/machine-id"]
out = {p: {"exists": os.path.lexists(p), "read": attempt(read_text, p) if os.path.isfile(p) else None}
       for p in paths}
emit({"paths": out, "passwd": attempt(read_text, "/etc/passwd"), "group": attempt(read_text, "/etc/group")})
'''


def test_etc_shadow_and_credentials_hidden(runner):
    """/etc/shadow, sudoers, ssh keys are not in the curated /etc; passwd lists no other users."""
    r = runner.probe(ETC_SECRETS)
    leaked = {p: v for p, v in r["paths"].items() if v["exists"]}
    assert leaked == {}, r
    # The host's password hashes appear in no readable /etc file.
    try:
        hashes = [f.split(":")[1] for f in Path("/etc/shadow").read_text().splitlines()
                  if f.count(":") > 2 and len(f.split(":")[1]) > 3]
    except OSError:
        hashes = []
    for h in hashes:
        assert h not in r["passwd"][1] and h not in r["group"][1]
    users = {line.split(":")[0] for line in r["passwd"][1].splitlines() if line}
    assert users <= {"root", "nobody", runner.ctx.ident.pw.pw_name}, r


SSL_PRIVATE = r'''
key = P["ssl_key"]
emit({"exists": os.path.lexists(key), "read": attempt(read_text, key),
      "listing": attempt(os.listdir, "/etc/ssl/private")})
'''


def test_etc_ssl_private_keys_unreadable(runner):
    """A private key in the host's /etc/ssl/private (0710 root:ssl-cert) is not readable inside.

    The curated /etc binds /etc/ssl for the CA certificates; the private-key
    directory next to them must not come along."""
    if runner.ctx.sec.ssl_key is None:
        pytest.skip("planting a key in /etc/ssl/private needs root")
    r = runner.probe(SSL_PRIVATE)
    assert r["read"][0] == "err", r
    assert r["listing"][0] == "err" or r["listing"][1] == [], r


OTHER_HOMES = r'''
res = {}
for path, text in P["other_home_secrets"]:
    home = os.path.dirname(path)
    res[path] = {"exists": os.path.lexists(path), "read": attempt(read_text, path),
                 "home_listing": attempt(os.listdir, home)}
emit({"others": res, "home_dir": attempt(os.listdir, "/home"), "root_dir": attempt(os.listdir, "/root")})
'''


def test_other_users_homes_invisible(runner):
    """Other users' homes (/root for the user, /home/iktest for root) and their files are absent."""
    ctx = runner.ctx
    if not ctx.params()["other_home_secrets"]:
        pytest.skip("no second user")
    r = runner.probe(OTHER_HOMES)
    for path, v in r["others"].items():
        assert v["exists"] is False and v["read"][0] == "err", (path, r)
        # The other home is either missing or an empty mount point of our own view.
        assert v["home_listing"][0] == "err" or v["home_listing"][1] == [], (path, r)
    own = ctx.ident.home
    if r["home_dir"][0] == "ok":
        allowed = {own.name} if own.parent == Path("/home") else set()
        assert set(r["home_dir"][1]) <= allowed, r
    if ctx.ident.uid != 0 and r["root_dir"][0] == "ok":
        assert r["root_dir"][1] == [], r


HOST_TMP = r'''
emit({"marker_exists": os.path.lexists(P["tmp_marker"]), "marker_read": attempt(read_text, P["tmp_marker"]),
      "tmp_listing": attempt(os.listdir, "/tmp"),
      "hidden_exists": os.path.lexists(P["hidden_dir"]), "hidden_read": attempt(read_text, P["hidden_secret"]),
      "session_listing": attempt(os.listdir, P["session_root"]),
      "isolate_bin": os.path.lexists(os.path.join(P["session_root"], "bin"))})
'''


def test_host_tmp_entries_invisible(runner):
    """Entries the test made in the host's /tmp are not visible (private /tmp)."""
    r = runner.probe(HOST_TMP)
    marker = os.path.basename(runner.ctx.sec.tmp_marker)
    assert r["marker_exists"] is False and r["marker_read"][0] == "err", r
    assert r["tmp_listing"][0] == "ok" and marker not in r["tmp_listing"][1], r
    assert r["hidden_exists"] is False and r["hidden_read"][0] == "err", r
    assert r["isolate_bin"] is False, r
    # The session dir exists only as the parent of the mounted work dir.
    if r["session_listing"][0] == "ok":
        assert set(r["session_listing"][1]) <= {runner.ctx.mode}, r


SYMLINK_OUT = r'''
link = os.path.join(P["work"], "escape-link")
emit({"link": attempt(os.readlink, link), "read": attempt(read_text, link),
      "tmp_link": attempt(read_text, os.path.join(P["work"], "escape-tmp")),
      "shadow_link": attempt(read_text, os.path.join(P["work"], "escape-shadow"))})
'''


def test_symlink_to_host_path_does_not_escape(runner):
    """A symlink in a mounted dir pointing at host files (a hidden dir, the host's /tmp, /etc/shadow) resolves
    inside the sandbox view."""
    work = runner.ctx.files.work
    for name, target in (("escape-link", runner.ctx.sec.hidden_secret), ("escape-tmp", runner.ctx.sec.tmp_marker),
                         ("escape-shadow", "/etc/shadow")):
        p = work / name
        if not p.is_symlink():
            p.symlink_to(target)
    r = runner.probe(SYMLINK_OUT)
    assert r["link"][0] == "ok", r
    assert r["read"][0] == "err" and r["tmp_link"][0] == "err" and r["shadow_link"][0] == "err", r


RUNTIME = r'''
d = P["runtime_dir"]
listing = attempt(os.listdir, d)
hits = []
if listing[0] == "ok":
    for f in listing[1]:
        try:
            if P["other_key"] in read_text(os.path.join(d, f)): hits.append(f)
        except OSError: pass
emit({"exists": os.path.lexists(P["other_connection_file"]), "read": attempt(read_text, P["other_connection_file"]),
      "listing": listing, "hits": hits})
'''


def test_jupyter_runtime_dir_other_kernel_invisible(runner):
    """Another kernel's connection file (HMAC key!) in the caller's Jupyter runtime dir is not visible.

    For the kernel runner this is the very directory holding its own connection file."""
    r = runner.probe(RUNTIME)
    other = os.path.basename(runner.ctx.files.other_connection_file)
    assert r["exists"] is False and r["read"][0] == "err", r
    assert r["hits"] == [], r
    if r["listing"][0] == "ok":
        assert other not in r["listing"][1], r
        # At most the kernel's own private connection file is there.
        assert len(r["listing"][1]) <= (1 if runner.kind == "kernel" else 0), r


CONNECTION_COPY = r'''
import ipykernel.connect
cf = ipykernel.connect.get_connection_file()
info = json.loads(read_text(cf))
def scribble():
    with open(cf, "a") as f: f.write("\n")
emit({"cf": cf, "transport": info.get("transport"), "ip": info.get("ip"), "write": attempt(scribble),
      "dir": sorted(os.listdir(os.path.dirname(cf)))})
'''


def test_kernel_connection_file_is_a_private_copy(runner):
    """Kernel only: the connection file the kernel sees at the host's path is a private ipc copy; writing it
    leaves the host's file (tcp ports, key) untouched, and no other runtime file is next to it."""
    if runner.kind != "kernel":
        pytest.skip("the kernel's connection file exists only under the launcher")
    host_cf = Path(runner.kernel().info["connection_file"])
    before = host_cf.read_bytes()
    r = runner.probe(CONNECTION_COPY)
    assert r["cf"] == str(host_cf), r
    assert r["transport"] == "ipc" and r["ip"].startswith("/run/isolated-kernel/"), r
    assert r["write"][0] == "ok", r
    assert host_cf.read_bytes() == before and json.loads(before)["transport"] == "tcp"
    assert r["dir"] == [host_cf.name], r


# ---------------------------------------------------------------- read-only mounts


WRITE_USR = r'''
tok = P["token"]
emit({
    "create": attempt(lambda: os.close(os.open("/usr/ik-probe-" + tok, os.O_WRONLY | os.O_CREAT, 0o644))),
    "mkdir": attempt(os.mkdir, "/usr/lib/ik-probe-" + tok),
    "open_existing_w": attempt(lambda: os.close(os.open("/usr/bin/env", os.O_WRONLY))),
    "chmod_same": attempt(os.chmod, "/usr/bin/env", os.stat("/usr/bin/env").st_mode & 0o7777),
    "etc_create": attempt(lambda: os.close(os.open("/etc/ik-probe-" + tok, os.O_WRONLY | os.O_CREAT, 0o644))),
    "root_create": attempt(lambda: os.close(os.open("/ik-probe-" + tok, os.O_WRONLY | os.O_CREAT, 0o644))),
    "usr_ro": bool(os.statvfs("/usr").f_flag & os.ST_RDONLY),
})
'''


def test_write_to_usr_fails(runner):
    """/usr, /etc and / are read-only; as root (owner of /usr on the host) only the mount stops it: EROFS."""
    r = runner.probe(WRITE_USR)
    allowed = {"EROFS"} if runner.ctx.ident.uid == 0 else {"EROFS", "EACCES", "EPERM"}
    for key in ("create", "mkdir", "open_existing_w", "chmod_same", "etc_create", "root_create"):
        assert r[key][0] == "err" and r[key][1] in allowed, (key, r)
    assert r["usr_ro"] is True, r
    tok = runner.ctx.sec.token
    assert not Path(f"/usr/ik-probe-{tok}").exists() and not Path(f"/usr/lib/ik-probe-{tok}").exists()


WRITE_SYNTHESIZED = r'''
res = {}
for f in ("/etc/passwd", "/etc/group", "/etc/hosts", "/etc/hostname"):
    def append(f=f):
        with open(f, "a") as h: h.write("evil:x:0:0::/:/bin/sh\\n")
    st = os.stat(f)
    res[f] = {
        "owner": st.st_uid, "mode": st.st_mode & 0o7777,
        "append": attempt(append),
        "truncate": attempt(os.truncate, f, 0),
        "chmod": attempt(os.chmod, f, 0o666),
        "chown": attempt(os.chown, f, 0, 0),
        "utime": attempt(os.utime, f, (0, 0)),
        "unlink": attempt(os.unlink, f),
        "rename": attempt(os.rename, f, f + ".moved"),
        "link": attempt(os.link, f, f + ".hard"),
        "read": attempt(read_text, f),
    }
emit(res)
'''


def test_synthesized_etc_files_read_only(runner):
    """passwd, group, hosts and hostname are written into the root tmpfs (not bound) and owned by the
    sandbox user: only the read-only root stops changing them, so every change must fail with EROFS."""
    r = runner.probe(WRITE_SYNTHESIZED)
    uid = runner.ctx.ident.uid
    assert r.data and len(r.data) == 4, r
    for f, a in r.data.items():
        assert a["read"][0] == "ok" and a["mode"] == 0o644, (f, a)
        assert a["owner"] == uid, (f, a)  # the owner: permission checks alone would allow every change
        for key in ("append", "truncate", "chmod", "chown", "utime", "unlink", "rename", "link"):
            assert a[key] == ["err", "EROFS"], (f, key, a)
    assert "evil" not in r["/etc/passwd"]["read"][1]


ETC_MOUNTS = r'''
mounts = []
for line in read_text("/proc/self/mountinfo").splitlines():
    f = line.split()
    if f[4] == "/etc" or f[4].startswith("/etc/"):
        mounts.append([f[4], f[5].split(",")])
emit({"mounts": mounts, "cache_w": attempt(lambda: os.close(os.open("/etc/ld.so.cache", os.O_WRONLY))),
      "nsswitch_chmod": attempt(os.chmod, "/etc/nsswitch.conf", 0o666)})
'''


def test_etc_mounts_all_read_only_nosuid_nodev(runner):
    """Every mount at or under /etc is ro,nosuid,nodev (the curated /etc is sealed with one recursive
    mount_setattr once built), and a bound host file cannot be opened for writing even by root inside."""
    r = runner.probe(ETC_MOUNTS)
    assert len(r["mounts"]) >= 5, r  # /etc itself and the binds below it
    for point, opts in r["mounts"]:
        assert {"ro", "nosuid", "nodev"} <= set(opts), (point, opts)
    assert r["cache_w"][0] == "err" and r["cache_w"][1] in {"EROFS", "EACCES"}, r
    allowed = {"EROFS"} if runner.ctx.ident.uid == 0 else {"EROFS", "EPERM"}
    assert r["nsswitch_chmod"][0] == "err" and r["nsswitch_chmod"][1] in allowed, r


WRITE_RO_BIND = r'''
d = P["rodir"]
def modify():
    with open(os.path.join(d, "existing.txt"), "a") as f: f.write("pwned\n")
emit({
    "create": attempt(lambda: open(os.path.join(d, "new.txt"), "w").close()),
    "append": attempt(modify),
    "unlink": attempt(os.unlink, os.path.join(d, "existing.txt")),
    "rename": attempt(os.rename, os.path.join(d, "existing.txt"), os.path.join(d, "moved.txt")),
    "chmod": attempt(os.chmod, d, 0o777),
    "read": attempt(read_text, os.path.join(d, "existing.txt")),
})
'''


def test_write_to_ro_bind_fails(runner):
    """A directory mounted ro: is read-only even though the caller owns it."""
    r = runner.probe(WRITE_RO_BIND)
    assert r["read"] == ["ok", "original\n"], r
    for key in ("create", "append", "unlink", "rename", "chmod"):
        assert r[key] == ["err", "EROFS"], (key, r)
    rodir = runner.ctx.files.rodir
    assert sorted(os.listdir(rodir)) == ["existing.txt"]
    assert (rodir / "existing.txt").read_text() == "original\n"


REMOUNT_SYSCALL = r'''
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
res = {}
for target in ("/usr", P["rodir"], "/"):
    res[target] = sc("mount", None, target, None, MS_REMOUNT | MS_BIND, None)
res["plain_remount_usr"] = sc("mount", None, "/usr", None, MS_REMOUNT, None)
res["after_write_usr"] = attempt(lambda: open("/usr/ik-probe-" + P["token"], "w").close())
res["after_write_rodir"] = attempt(lambda: open(os.path.join(P["rodir"], "new.txt"), "w").close())
res["usr_ro"] = bool(os.statvfs("/usr").f_flag & os.ST_RDONLY)
res["rodir_ro"] = bool(os.statvfs(P["rodir"]).f_flag & os.ST_RDONLY)
emit(res)
'''


def test_remount_rw_by_syscall_denied(runner):
    """mount(MS_REMOUNT|MS_BIND) without MS_RDONLY on /usr, a ro bind and / fails with EPERM."""
    r = runner.probe(REMOUNT_SYSCALL)
    for key in ("/usr", runner.ctx.params()["rodir"], "/", "plain_remount_usr"):
        assert_errno(r[key], "EPERM", key)
    assert r["after_write_usr"][0] == "err" and r["after_write_rodir"][0] == "err", r
    assert r["usr_ro"] and r["rodir_ro"], r


REMOUNT_CMD = r'''
import subprocess
def run(*cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return [p.returncode, p.stdout[-300:]]
def overwrite(path):
    with open(path, "w") as f:
        f.write("x\n")
emit({"usr": run("mount", "-o", "remount,rw", "/usr"),
      "usr_bind": run("mount", "-o", "remount,bind,rw", "/usr"),
      "rodir": run("mount", "-o", "remount,bind,rw", P["rodir"]),
      "rodir_plain": run("mount", "-o", "remount,rw", P["rodir"]),
      "after_write_usr": attempt(lambda: open("/usr/ik-probe-" + P["token"], "w").close()),
      "after_write_rodir": attempt(lambda: open(os.path.join(P["rodir"], "new.txt"), "w").close()),
      "after_overwrite": attempt(overwrite, os.path.join(P["rodir"], "existing.txt"))})
'''


def test_remount_rw_by_mount_command_denied(runner):
    """`mount -o remount,rw` (plain and bind) of /usr and of a read-only bind fails, also as uid 0 inside
    (--root), and the mounts stay read-only: the host's files are untouched."""
    rodir = runner.ctx.files.rodir
    for extra in ([], ["--root"]):
        r = runner.probe(REMOUNT_CMD, opts=[*SANDBOX_OPTS, *extra])
        for key in ("usr", "usr_bind", "rodir", "rodir_plain"):
            assert r[key][0] != 0, (key, extra, r)
        assert r["after_write_usr"][0] == "err" and r["after_write_rodir"][0] == "err", (extra, r)
        assert r["after_overwrite"][0] == "err", (extra, r)
        assert sorted(os.listdir(rodir)) == ["existing.txt"], extra
        assert (rodir / "existing.txt").read_text() == "original\n", extra


NEW_MOUNTS = r'''
import subprocess
before = read_text("/proc/self/mountinfo")
target = os.path.join(P["home"], "mnt-probe")
os.makedirs(target, exist_ok=True)
res = {
    "tmpfs": sc("mount", "tmpfs", target, "tmpfs", 0, "size=1m"),
    "proc": sc("mount", "proc", target, "proc", 0, None),
    "sysfs": sc("mount", "sysfs", target, "sysfs", 0, None),
    "bind_root": sc("mount", "/", target, None, 4096 | 16384, None),
    "fsopen": sc("fsopen", "tmpfs", 0),
    "open_tree": sc("open_tree", -100, "/usr", 1 | 0x80000),
    "cmd": subprocess.run(["mount", "-t", "tmpfs", "none", target], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT).returncode,
}
res["unchanged"] = read_text("/proc/self/mountinfo") == before
res["listing"] = os.listdir(target)
os.rmdir(target)
emit(res)
'''


def test_new_mounts_denied(runner):
    """New mounts (tmpfs, proc, sysfs, a bind of /) and the new mount API are denied."""
    r = runner.probe(NEW_MOUNTS)
    for key in ("tmpfs", "proc", "sysfs", "bind_root", "fsopen", "open_tree"):
        assert_errno(r[key], "EPERM", key)
    assert r["cmd"] != 0, r
    assert r["unchanged"] is True and r["listing"] == [], r


UMOUNT = r'''
import subprocess
before = read_text("/proc/self/mountinfo")
MNT_DETACH = 2
res = {t: sc("umount2", t, MNT_DETACH) for t in ("/usr", "/proc", P["rodir"], "/tmp", "/")}
res["cmd"] = subprocess.run(["umount", "-l", "/usr"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT).returncode
res["unchanged"] = read_text("/proc/self/mountinfo") == before
res["python_there"] = os.path.exists("/usr/bin/python3")
emit(res)
'''


def test_umount_denied(runner):
    """umount2 of /usr, /proc, a ro bind, /tmp, / fails with EPERM; nothing is uncovered."""
    r = runner.probe(UMOUNT)
    for key in ("/usr", "/proc", runner.ctx.params()["rodir"], "/tmp", "/"):
        assert_errno(r[key], "EPERM", key)
    assert r["cmd"] != 0 and r["unchanged"] is True and r["python_there"] is True, r


# ---------------------------------------------------------------- root escapes


CHROOT = r'''
import tempfile
root_list = sorted(os.listdir("/"))
d = tempfile.mkdtemp(prefix="chroot-probe-")
res = {"chroot": sc("chroot", d)}
cwd = os.open(".", os.O_RDONLY)
# Classic escape: after a chroot into a subdir, walk up with chdir("..") and chroot(".").
os.chdir(d)
for _ in range(64):
    os.chdir("..")
res["chroot_dot"] = sc("chroot", ".")
res["cwd_after"] = os.getcwd()
res["listing"] = sorted(os.listdir("."))
res["root_unchanged"] = sorted(os.listdir("/")) == root_list
res["dotdot_is_root"] = os.stat("/..").st_ino == os.stat("/").st_ino
res["marker"] = os.path.exists(P["tmp_marker"]) or os.path.exists(P["hidden_secret"])
os.fchdir(cwd); os.close(cwd)
os.rmdir(d)
res["root_list"] = root_list
emit(res)
'''


def test_chroot_escape(runner):
    """chroot is denied, and walking up from / never leaves the sandbox root."""
    r = runner.probe(CHROOT)
    assert_errno(r["chroot"], "EPERM", "chroot")
    assert_errno(r["chroot_dot"], "EPERM", "chroot(.)")
    assert r["cwd_after"] == "/" and r["listing"] == r["root_list"], r
    assert r["root_unchanged"] and r["dotdot_is_root"] and not r["marker"], r
    # The sandbox root is the curated view, not the host's.
    assert not {"var", "opt", "srv", "boot", "work", "mnt", "media"} & set(r["root_list"]), r


PIVOT = r'''
os.makedirs("/tmp/pr/old", exist_ok=True)
cwd = os.getcwd()
res = {"pivot": sc("pivot_root", "/tmp", "/tmp/pr/old"), "pivot_dot": sc("pivot_root", ".", ".")}
res["root_unchanged"] = os.path.exists("/usr/bin/python3") and os.getcwd() == cwd
emit(res)
'''


def test_pivot_root_denied(runner):
    r = runner.probe(PIVOT)
    assert_errno(r["pivot"], "EPERM", "pivot_root")
    assert_errno(r["pivot_dot"], "EPERM", "pivot_root(.,.)")
    assert r["root_unchanged"], r


OPEN_BY_HANDLE = r'''
# name_to_handle_at, then the "shocker" attack: open_by_handle_at with a forged
# handle for inode 2 (the root of an ext4 file system) relative to a mount fd.
buf = ctypes.create_string_buffer(8 + 128)
struct.pack_into("I", buf, 0, 128)
mount_id = ctypes.c_int(0)
res = {"name_to_handle_at": sc("name_to_handle_at", -100, "/usr", buf, ctypes.byref(mount_id), 0)}
forged = ctypes.create_string_buffer(struct.pack("Ii", 8, 1) + struct.pack("<Q", 2))
fd = os.open("/usr", os.O_RDONLY)
res["open_by_handle_at"] = sc("open_by_handle_at", fd, forged, os.O_RDONLY)
os.close(fd)
emit(res)
'''


def test_open_by_handle_at_denied(runner):
    r = runner.probe(OPEN_BY_HANDLE)
    assert_errno(r["name_to_handle_at"], "EPERM", "name_to_handle_at")
    assert_errno(r["open_by_handle_at"], "EPERM", "open_by_handle_at")


# ---------------------------------------------------------------- devices and /sys


DEV = r'''
import stat
forbidden = ["sda", "sda1", "sdb", "vda", "vda1", "xvda", "nvme0", "nvme0n1", "mem", "kmem", "port", "kmsg",
             "kvm", "loop0", "loop-control", "mapper", "console", "tty0", "tty1", "ttyS0", "net", "cpu", "hpet",
             "rtc0", "watchdog", "dri", "snd", "input", "disk", "uinput", "vsock", "vhost-vsock", "vhost-net",
             "btrfs-control", "autofs", "fuse", "nvram", "mcelog", "userfaultfd", "sg0", "bsg", "hidraw0"]
present = [n for n in forbidden if os.path.lexists("/dev/" + n)]
blocks, chars = [], {}
for root, dirs, files in os.walk("/dev"):
    for n in dirs + files:
        p = os.path.join(root, n)
        st = os.lstat(p)
        if stat.S_ISBLK(st.st_mode): blocks.append(p)
        if stat.S_ISCHR(st.st_mode): chars[p] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
emit({"present": present, "blocks": blocks, "chars": chars, "top": sorted(os.listdir("/dev")),
      "mknod": attempt(os.mknod, "/dev/shm/ik-mem", 0o600 | stat.S_IFCHR, os.makedev(1, 1)),
      "mknod_blk": attempt(os.mknod, os.path.join(P["home"], "ik-blk"), 0o600 | stat.S_IFBLK, os.makedev(8, 0))})
'''

ALLOWED_CHARS = {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)}  # null zero full random urandom tty ptmx
ALLOWED_DEV_TOP = {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin",
                   "stdout", "stderr", "core", "mqueue"}


def test_dev_minimal(runner):
    """Only the minimal /dev exists: no disks, /dev/mem, /dev/kmsg, /dev/kvm; no mknod."""
    r = runner.probe(DEV)
    assert r["present"] == [] and r["blocks"] == [], r
    bad = {p: mm for p, mm in r["chars"].items() if tuple(mm) not in ALLOWED_CHARS and mm[0] != 136}
    assert bad == {}, r   # 136 = the sandbox's own pts slaves
    assert set(r["top"]) <= ALLOWED_DEV_TOP, r
    assert r["mknod"][0] == "err" and r["mknod_blk"][0] == "err", r


SYS = r'''
emit({"listing": attempt(os.listdir, "/sys"),
      "paths": {p: os.path.lexists(p) for p in ("/sys/class/net", "/sys/kernel", "/sys/fs/cgroup", "/sys/firmware",
                                                "/sys/block", "/sys/kernel/debug", "/sys/power/state")}})
'''


def test_sys_not_mounted(runner):
    r = runner.probe(SYS)
    assert r["listing"][0] == "err" or r["listing"][1] == [], r
    assert not any(r["paths"].values()), r


# ---------------------------------------------------------------- tmpfs size caps


TMPFS_CAP = r'''
res = {}
for d in ("/tmp", P["home"], "/dev/shm"):
    p = os.path.join(d, "ik-fill")
    written, err = 0, None
    chunk = b"\0" * (1 << 20)
    try:
        with open(p, "wb") as f:
            for _ in range(16):
                f.write(chunk); f.flush(); os.fsync(f.fileno())
                written += len(chunk)
    except OSError as e:
        err = ename(e.errno)
    try: os.unlink(p)
    except OSError: pass
    st = os.statvfs(d)
    res[d] = {"written": written, "err": err, "size": st.f_blocks * st.f_frsize}
res["root_write"] = attempt(lambda: open("/ik-fill", "wb").close())
emit(res)
'''


def test_tmpfs_size_caps(runner):
    """--tmpfs-size 8M caps /tmp, HOME and /dev/shm: writing 16M fails with ENOSPC, after the first MiBs went in."""
    r = runner.probe(TMPFS_CAP)
    for d in ("/tmp", str(runner.ctx.ident.home), "/dev/shm"):
        v = r[d]
        assert v["err"] == "ENOSPC" and 1 << 20 <= v["written"] <= 8 << 20, (d, r)
        assert v["size"] <= 8 << 20, (d, r)
    assert r["root_write"][0] == "err", r
