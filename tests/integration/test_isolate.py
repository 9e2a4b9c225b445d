"""What a program sees inside `isolate`: the cases of the original
isolate.sh test_isolate.sh, then the default view (/etc, HOME, uid,
processes, network, environment, hostname)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import uuid

import pytest

from kit.common import pids_with_marker, wait_until


# ------------------------------------------------ ported from test_isolate.sh


def test_bin_and_usr_present(sb):
    r = sb.sh("test -e /bin -a -e /usr && test -x /bin/sh && ls /usr/bin/env")
    assert r.returncode == 0, r
    assert r.out == "/usr/bin/env", r


def test_etc_restricted(sb):
    r = sb.sh("for f in /etc/shadow /etc/gshadow /etc/sudoers /etc/ssh; do"
              "  test -e $f && echo LEAK $f; done; echo done")
    assert r.returncode == 0, r
    assert r.out == "done", r
    # the host has them, so their absence above is the sandbox's doing
    assert os.path.exists("/etc/shadow")


def test_etc_passwd_lists_only_root_caller_nobody(sb):
    r = sb.sh("cat /etc/passwd; echo ---; cat /etc/group")
    assert r.returncode == 0, r
    passwd, group = r.stdout.split("---\n")
    users = {line.split(":")[0]: line.split(":") for line in passwd.splitlines() if line}
    assert set(users) == {"root", sb.user, "nobody"}, r
    assert users[sb.user][2] == str(sb.uid), r
    assert users[sb.user][5] == str(sb.home), r
    assert users["root"][2] == "0" and users["nobody"][2] == "65534", r
    gids = {line.split(":")[2] for line in group.splitlines() if line}
    assert gids == {"0", str(sb.gid), "65534"}, r


def test_pwd_preserved(sb):
    r = sb.sh("pwd; /bin/pwd")
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == [str(sb.workdir)] * 2, r


def test_rw_dir_write_visible_outside(sb):
    d = sb.mkdir("rwdir")
    r = sb.sh(f"touch {d}/file1", "-m", f". {d}", cwd=sb.mkdir("cwd"))
    assert r.returncode == 0, r
    assert (d / "file1").exists()
    assert (d / "file1").stat().st_uid == sb.uid


def test_ro_dir_write_fails(sb):
    d = sb.mkdir("rodir")
    r = sb.sh(f"touch {d}/file1", "-m", f". ro:{d}", cwd=sb.mkdir("cwd"))
    assert r.returncode != 0, r
    assert "Read-only file system" in r.stderr, r
    assert not (d / "file1").exists()


def test_file_mount(sb):
    f = sb.write("other/file1", "old")
    sb.write("other/sibling", "x")
    r = sb.sh(f"cat {f}; echo; ls {f.parent}; printf 123 > {f}",
              "-m", f". {f}", cwd=sb.mkdir("cwd"))
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == ["old", "file1"], r
    assert f.read_text() == "123"


def test_file_mount_sibling_invisible(sb):
    f = sb.write("other/file1", "old")
    sib = sb.write("other/sibling", "x")
    r = sb.sh(f"test -e {sib} && echo VISIBLE; test -e {f} && echo FILE",
              "-m", f". {f}", cwd=sb.mkdir("cwd"))
    assert r.out == "FILE", r


def test_dest_src_dir(sb):
    d = sb.mkdir("srcdir")
    r = sb.sh("touch /tmp/x1/file1 && ls /tmp/x1", "-m", f". /tmp/x1={d}")
    assert r.returncode == 0, r
    assert r.out == "file1", r
    assert (d / "file1").exists()


def test_dest_src_dir_outside_default_view(sb):
    d = sb.mkdir("srcdir")
    sb.write("srcdir/data", "payload")
    r = sb.sh("cat /opt/ikdata/data", "-m", f". /opt/ikdata={d}")
    assert r.returncode == 0, r
    assert r.out == "payload", r


def test_dest_src_file(sb):
    f = sb.write("srcfile", "abc")
    r = sb.sh("cat /tmp/x2; printf xyz > /tmp/x2", "-m", f". /tmp/x2={f}")
    assert r.returncode == 0, r
    assert r.out == "abc", r
    assert f.read_text() == "xyz"


@pytest.mark.parametrize("dest", ["/bin/tar", "/usr/bin/tar"])
def test_dest_none_file_is_empty(sb, dest):
    assert os.path.getsize("/usr/bin/tar") > 0
    r = sb.sh("stat --format=%s /usr/bin/tar /bin/tar", "-m", f". {dest}=none")
    assert r.returncode == 0, r
    assert r.stdout.split() == ["0", "0"], r
    assert os.path.getsize("/usr/bin/tar") > 0  # host untouched


def test_dest_none_dir_is_empty(sb):
    assert os.path.exists("/usr/sbin/chroot")
    r = sb.sh("test -d /usr/sbin && ls -A /usr/sbin; test ! -e /usr/sbin/chroot && echo gone",
              "-m", ". /usr/sbin=none")
    assert r.returncode == 0, r
    assert r.out == "gone", r


def test_dest_none_user_dir(sb):
    sb.write("data/secret/key", "k")
    sb.write("data/public", "p")
    d = sb.workdir / "data"
    r = sb.sh(f"ls -A {d}/secret; cat {d}/public", "-m", f"{d} {d}/secret=none")
    assert r.returncode == 0, r
    assert r.out == "p", r
    assert (d / "secret" / "key").read_text() == "k"


# ------------------------------------------------ default view


def test_home_private_empty_writable(sb):
    tag = uuid.uuid4().hex[:8]
    secret = sb.home / f".ik-secret-{tag}"
    created = sb.home / f"ik-new-{tag}"
    secret.write_text("s3cret")
    os.chown(secret, sb.uid, sb.gid)
    try:
        r = sb.sh('echo "H=$HOME"; ls -A "$HOME"; echo ---; '
                  f'cat {secret} 2>/dev/null; echo new > {created} && cat {created}')
        assert r.returncode == 0, r
        assert r.stdout.splitlines() == [f"H={sb.home}", "---", "new"], r
        assert not created.exists()   # the HOME inside is private
    finally:
        secret.unlink()
        if created.exists():
            created.unlink()


def test_runs_as_caller_uid(sb):
    r = sb.sh("id -u; id -g; id -un")
    assert r.returncode == 0, r
    assert r.stdout.split() == [str(sb.uid), str(sb.gid), sb.user], r


def test_root_flag_shows_uid0_but_files_owned_by_caller(sb):
    d = sb.mkdir("rw")
    r = sb.sh(f"id -u; id -g; touch {d}/made-by-root", "--root", "-m", f". {d}")
    assert r.returncode == 0, r
    assert r.stdout.split() == ["0", "0"], r
    assert (d / "made-by-root").stat().st_uid == sb.uid


def test_hostname_is_isolated(sb):
    r = sb.sh("hostname; cat /proc/sys/kernel/hostname; cat /etc/hostname")
    assert r.returncode == 0, r
    assert r.stdout.split() == ["isolated"] * 3, r


def test_host_processes_invisible(sb):
    marker = f"9{uuid.uuid4().int % 10**8}.5"
    host = subprocess.Popen(["sleep", marker])
    try:
        assert wait_until(lambda: pids_with_marker(marker) == [host.pid], 5)
        # the marker is in a script file, so no argv inside contains it
        probe = sb.write("probe.sh", "ls /proc | grep -c '^[0-9]'\n"
                         f"grep -l {marker} /proc/[0-9]*/cmdline\n"
                         "ps -e -o pid= | wc -l\n")
        r = sb.run("--", "sh", probe)
        assert r.returncode == 0, r
        lines = r.stdout.split()
        assert len(lines) == 2, r          # no cmdline matched the marker
        nproc_dir, nps = int(lines[0]), int(lines[1])
        assert 1 <= nproc_dir <= 6, r       # init, sh, ls/grep ... not the host
        assert 1 <= nps <= 6, r
    finally:
        host.kill()
        host.wait()


def test_program_pid_is_small(sb):
    r = sb.py("import os; print(os.getpid())")
    assert r.returncode == 0, r
    assert int(r.out) <= 3, r


def test_env_filtered(sb):
    r = sb.run("--", "env", env={"JUPYTER_TOKEN": "xyz", "AWS_SECRET": "abc",
                                 "LC_ALL": "C.UTF-8"})
    assert r.returncode == 0, r
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert "JUPYTER_TOKEN" not in env, r
    assert "AWS_SECRET" not in env, r
    assert "xyz" not in r.stdout
    assert env["HOME"] == str(sb.home), r
    assert env["USER"] == sb.user, r
    assert env["LC_ALL"] == "C.UTF-8", r
    allowed = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TERM", "TZ", "PWD"}
    extra = {k for k in env if k not in allowed and not k.startswith("LC_")}
    assert not extra, r


def test_keep_env_and_setenv(sb):
    r = sb.run("--keep-env", "JUPYTER_TOKEN", "--setenv", "FOO=bar baz",
               "--setenv", "EMPTY=", "--", "env",
               env={"JUPYTER_TOKEN": "xyz", "OTHER": "no"})
    assert r.returncode == 0, r
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert env.get("JUPYTER_TOKEN") == "xyz", r
    assert env.get("FOO") == "bar baz", r
    assert env.get("EMPTY") == "", r
    assert "OTHER" not in env, r


def test_tmp_private(sb):
    marker = f"ik-tmp-{uuid.uuid4().hex[:8]}"
    r = sb.sh(f"ls -A /tmp; touch /tmp/{marker}", "-m", f"{sb.workdir}")
    assert r.returncode == 0, r
    # only the path components leading to the work dir mount, nothing of the host
    assert r.stdout.split() == [sb.workdir.parent.name], r
    assert not os.path.exists(f"/tmp/{marker}")


def test_own_process_group(sb):
    # Its own process group (the launcher signals it); not a new session:
    # the terminal is dropped with TIOCNOTTY (apply/session.cpp), and the
    # caller's session leader lies outside the pid namespace (sid 0).
    r = sb.py("import os; print(os.getpgrp() == os.getpid(), os.getsid(0))")
    assert r.returncode == 0, r
    assert r.out == "True 0", r
    r = sb.sh("ps -o pgid= -p $$; echo $$")
    assert r.returncode == 0, r
    pgid, pid = r.stdout.split()
    assert pgid == pid, r


def test_no_controlling_tty(sb):
    r = sb.py("import os\ntry:\n    os.open('/dev/tty', os.O_RDWR); print('tty')\n"
              "except OSError as e:\n    print('no tty', e.errno)")
    assert r.returncode == 0, r
    assert r.out.startswith("no tty"), r


def test_root_dir_lists_only_the_view(sb):
    libs = {n for n in ("lib", "lib32", "lib64", "libx32") if os.path.lexists(f"/{n}")}
    expected = {"bin", "sbin", "usr", "etc", "dev", "proc", "tmp"} | libs
    expected.add(sb.home.parts[1])            # /root or /home
    r = sb.sh("ls -A /")
    assert r.returncode == 0, r
    assert set(r.stdout.split()) == expected, r


def test_dev_is_minimal(sb):
    code = ("import os, errno\n"
            "print(' '.join(sorted(os.listdir('/dev'))))\n"
            "open('/dev/null', 'w').write('x')\n"
            "print(len(open('/dev/zero', 'rb').read(8)), len(open('/dev/urandom', 'rb').read(8)))\n"
            "try:\n"
            "    f = open('/dev/full', 'wb', buffering=0); f.write(b'x')\n"
            "except OSError as e:\n"
            "    print(errno.errorcode[e.errno])\n"
            "open('/dev/shm/x', 'w').write('x'); print('shm ok')\n"
            "m, s = os.openpty(); print(' '.join(sorted(os.listdir('/dev/pts'))))\n")
    r = sb.py(code)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    devs = set(lines[0].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
            "fd", "stdin", "stdout", "stderr"} <= devs, r
    for host_only in ("kmsg", "mem", "kvm", "vda", "sda", "console", "loop0"):
        assert host_only not in devs, r
    # a private devpts: only the pty just opened, none of the host's
    assert lines[1:] == ["8 8", "ENOSPC", "shm ok", "0 ptmx"], r


def test_inherited_fds_closed(sb):
    secret = sb.mkdir("fdsecret")
    sb.write("fdsecret/s", "leak")
    fd0 = os.open(secret, os.O_RDONLY | os.O_DIRECTORY)
    fd = fcntl.fcntl(fd0, fcntl.F_DUPFD, 50)   # well above anything the sandbox opens
    os.close(fd0)
    code = ("import os\n"
            "fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))\n"
            "print(fds)\n"
            "print(os.path.exists('/proc/self/fd/%d/s' % " + str(fd) + "))\n")
    try:
        cwd = sb.mkdir("cwd")
        p = sb.popen("--", "/usr/bin/python3", "-c", code, cwd=cwd, pass_fds=(fd,))
        out, err = p.communicate(timeout=30)
    finally:
        os.close(fd)
    assert p.returncode == 0, (out, err)
    fds, leaked = out.splitlines()
    # 0-2 plus the descriptor listdir itself holds
    assert fds == "[0, 1, 2, 3]", (fd, out, err)
    assert leaked == "False", (fd, out, err)


def test_hostname_option(sb):
    r = sb.run("--hostname", "kernel-7", "--", "hostname")
    assert r.returncode == 0, r
    assert r.out == "kernel-7", r


def test_chdir_option(sb):
    d = sb.mkdir("there")
    r = sb.run("--chdir", d, "--", "pwd", cwd=sb.workdir)
    assert r.returncode == 0, r
    assert r.out == str(d), r


def test_chdir_missing_dir_is_an_error(sb):
    # an explicit --chdir that cannot be honoured must not silently run the
    # program somewhere else (think `isolate --chdir /data -- rm -rf *`)
    missing = sb.workdir / "no-such-dir"
    r = sb.run("--chdir", missing, "--", "pwd")
    assert r.returncode in (2, 125), r
    assert str(missing) in r.stderr, r
    assert r.stdout == "", r


def test_unmounted_cwd_falls_back_to_home(sb):
    other = sb.mkdir("other")
    cwd = sb.mkdir("cwd")
    r = sb.run("-m", other, "--", "pwd", cwd=cwd)
    assert r.returncode == 0, r
    assert r.out == str(sb.home), r
