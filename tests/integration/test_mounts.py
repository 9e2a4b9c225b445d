"""The mount list grammar (-m/--mnt, MNTDIRS, --config), --print-plan, and
read-only binds that stay read-only."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest


def test_print_plan_json_lists_mounts(sb):
    d = sb.mkdir("data")
    r = sb.run("--print-plan", "-m", f". ro:{d}", "--", "prog", "arg")
    assert r.returncode == 0, r
    plan = json.loads(r.stdout)
    assert plan["argv"] == ["prog", "arg"], r
    binds = {m["dest"]: m for m in plan["mounts"] if m.get("op") == "bind"}
    assert binds[str(sb.workdir)]["access"] == "rw", r
    assert binds[str(sb.workdir)]["src"] == str(sb.workdir), r
    assert binds[str(d)]["access"] == "ro", r
    assert binds["/usr"]["access"] == "ro", r
    assert plan["identity"]["uid"] == sb.uid, r
    assert plan["hostname"] == "isolated", r


def test_print_plan_starts_nothing(sb):
    r = sb.run("--print-plan", "--", "sh", "-c", f"touch {sb.workdir}/ran")
    assert r.returncode == 0, r
    assert not (sb.workdir / "ran").exists()


@pytest.mark.parametrize("order", ["a/b a", "a a/b"])
def test_nested_mounts_any_order(sb, order):
    sb.write("top/a/fa", "A")
    sb.write("top/a/b/fb", "B")
    sb.write("top/c/fc", "C")             # not listed: must stay invisible
    cwd = sb.workdir / "top"
    r = sb.sh("cat a/fa a/b/fb; test -e c && echo C-VISIBLE; true", "-m", order, cwd=cwd)
    assert r.returncode == 0, r
    assert r.out == "AB", r


@pytest.mark.parametrize("order", ["ro:a/b a", "a ro:a/b"])
def test_nested_ro_inside_rw_any_order(sb, order):
    sb.write("top/a/fa", "A")
    sb.write("top/a/b/fb", "B")
    cwd = sb.workdir / "top"
    r = sb.sh("touch a/new-a; touch a/b/new-b; cat a/b/fb", "-m", order, cwd=cwd)
    assert r.out == "B", r
    assert (cwd / "a" / "new-a").exists(), r
    assert not (cwd / "a" / "b" / "new-b").exists(), r
    assert "Read-only file system" in r.stderr, r


@pytest.mark.parametrize("order", ["ro:a rw:a/b", "rw:a/b ro:a"])
def test_nested_rw_inside_ro_any_order(sb, order):
    sb.write("top/a/fa", "A")
    sb.write("top/a/b/fb", "B")
    cwd = sb.workdir / "top"
    r = sb.sh("touch a/new-a; touch a/b/new-b; cat a/fa", "-m", order, cwd=cwd)
    assert r.out == "A", r
    assert not (cwd / "a" / "new-a").exists(), r
    assert (cwd / "a" / "b" / "new-b").exists(), r


def test_symlinked_cwd_visible_at_both_paths(sb):
    sb.write("real/inside", "here")
    link = sb.symlink("link", "real")
    real = sb.workdir / "real"
    sb.write("sibling/x", "")                # not under the mounted dir
    r = sb.sh(f"pwd; cat {link}/inside {real}/inside; echo; touch {link}/w; ls {real}; "
              f"test -e {sb.workdir}/sibling && echo SIBLING; true", cwd=link)
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == [str(link), "herehere", "inside", "w"], r
    assert (real / "w").exists()


def test_symlinked_mount_path_visible_at_both_paths(sb):
    sb.write("real2/inside", "here")
    link = sb.symlink("link2", "real2")
    real = sb.workdir / "real2"
    cwd = sb.mkdir("cwd")
    r = sb.sh(f"cat {link}/inside {real}/inside; touch {link}/w", "-m", str(link), cwd=cwd)
    assert r.returncode == 0, r
    assert r.out == "herehere", r
    assert (real / "w").exists()


def test_relative_paths_resolve_against_logical_cwd(sb):
    # link -> deep/real: logically link/.. is the work dir, physically it is deep/
    sb.write("deep/real/f", "")
    sb.write("sib/g", "logical")
    sb.write("deep/sib/g", "physical")
    link = sb.symlink("link", "deep/real")
    r = sb.sh(f"cat {sb.workdir}/sib/g; test -e {sb.workdir}/deep/sib && echo PHYSICAL; true",
              "-m", "../sib", cwd=link)
    assert r.returncode == 0, r
    assert r.out == "logical", r


@pytest.fixture
def home_subdir(sb):
    d = sb.home / f"ik-tilde-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    sb.chown(d)
    (d / "f").write_text("tilde")
    sb.chown(d / "f")
    yield d
    for p in sorted(d.rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() else p.rmdir()
    d.rmdir()


def test_tilde_expansion(sb, home_subdir):
    r = sb.sh(f"cat {home_subdir}/f; touch {home_subdir}/w", "-m", f". ~/{home_subdir.name}")
    assert r.returncode == 0, r
    assert r.out == "tilde", r
    assert (home_subdir / "w").exists()


def test_tilde_user_expansion(sb, home_subdir):
    r = sb.sh(f"cat {home_subdir}/f", "-m", f". ro:~{sb.user}/{home_subdir.name}")
    assert r.returncode == 0, r
    assert r.out == "tilde", r


def test_mntdirs_env(sb):
    a = sb.mkdir("m1")
    b = sb.mkdir("m2")
    cwd = sb.mkdir("cwd")
    r = sb.sh(f"test -d {a} && echo A; touch {a}/x {b}/y; test -e {cwd} && echo CWD",
              env={"MNTDIRS": f"ro:{a} {b}"}, cwd=cwd)
    assert r.out == "A", r                 # MNTDIRS replaces the default '.'
    assert not (a / "x").exists(), r
    assert (b / "y").exists(), r


def test_mnt_option_overrides_mntdirs(sb):
    a = sb.mkdir("m1")
    b = sb.mkdir("m2")
    r = sb.sh(f"test -e {a} && echo A; test -e {b} && echo B", "-m", str(b),
              env={"MNTDIRS": str(a)}, cwd=sb.mkdir("cwd"))
    assert r.out == "B", r


@pytest.mark.parametrize("form", ["-m=", "--mnt=", "-m", "--mnt"])
def test_mnt_syntax(sb, form):
    a = sb.mkdir("m1")
    cwd = sb.mkdir("cwd")
    hidden = sb.mkdir("hidden")
    lst = f". {a}"
    args = [form + lst] if form.endswith("=") else [form, lst]
    r = sb.sh(f"test -d {a} && test -d {cwd} && echo both; test -e {hidden} && echo HIDDEN; true",
              *args, cwd=cwd)
    assert r.returncode == 0, r
    assert r.out == "both", r


def test_mnt_repeatable(sb):
    a = sb.mkdir("m1")
    b = sb.mkdir("m2")
    cwd = sb.mkdir("cwd")
    r = sb.sh(f"test -d {a} && test -d {b} && echo both; test -e {cwd} && echo CWD; true",
              "-m", str(a), "-m", str(b), cwd=cwd)
    assert r.out == "both", r             # and not the default '.'
    # The one thing said: the unmounted working directory (issue 14).
    assert r.stderr.count("\n") == 1 and f"note: the current directory {cwd} is not mounted" in r.stderr, r


def test_config_file_mounts(sb):
    a = sb.mkdir("m1")
    cfg = sb.write("cfg.json", json.dumps({"mounts": [f"ro:{a}", "."], "hostname": "cfghost",
                                           "setenv": {"FROMCFG": "1"}}))
    r = sb.sh(f"hostname; echo $FROMCFG; touch {a}/x", "--config", cfg)
    assert r.stdout.split() == ["cfghost", "1"], r
    assert not (a / "x").exists()


def test_bad_mount_path_is_usage_error(sb):
    missing = sb.workdir / "does-not-exist"
    r = sb.run("-m", f". {missing}", "--", "true")
    assert r.returncode == 2, r
    assert str(missing) in r.stderr, r
    assert len(r.stderr.strip().splitlines()) == 1, r


def test_bad_mount_flag_is_usage_error(sb):
    r = sb.run("-m", "bogus:.", "--", "true")
    assert r.returncode == 2, r
    assert "bogus" in r.stderr, r


def test_unknown_config_key(sb):
    cfg = sb.write("cfg.json", json.dumps({"mounts": ["."], "no_such_key": 1}))
    r = sb.run("--config", cfg, "--", "true")
    assert r.returncode == 2, r
    assert "no_such_key" in r.stderr, r


# ------------------------------------------------ read-only stays read-only


def _ro_setup(sb):
    d = sb.mkdir("ro")
    sb.write("ro/existing", "orig")
    return d


def test_ro_bind_cannot_be_unmounted(sb):
    d = _ro_setup(sb)
    for opts in ([], ["--root"]):
        r = sb.sh(f"umount {d}; umount -l {d}; cat {d}/existing; echo; touch {d}/new; echo end",
                  *opts, "-m", f". ro:{d}")
        assert r.stdout.split() == ["orig", "end"], r
        assert not (d / "new").exists(), r


def test_ro_bind_os_open_wronly_fails(sb):
    d = _ro_setup(sb)
    code = ("import os, sys, errno\n"
            "for p, fl in ((sys.argv[1] + '/existing', os.O_WRONLY),\n"
            "              (sys.argv[1] + '/existing', os.O_RDWR | os.O_TRUNC),\n"
            "              (sys.argv[1] + '/new', os.O_WRONLY | os.O_CREAT)):\n"
            "    try:\n"
            "        os.open(p, fl, 0o644); print('OPENED')\n"
            "    except OSError as e:\n"
            "        print(errno.errorcode[e.errno])\n")
    for opts in ([], ["--root"]):
        r = sb.run(*opts, "-m", f". ro:{d}", "--", "/usr/bin/python3", "-c", code, d)
        assert r.returncode == 0, r
        assert r.stdout.split() == ["EROFS"] * 3, r
        assert (d / "existing").read_text() == "orig"
        assert not (d / "new").exists()


def test_system_dirs_read_only(sb):
    for opts in ([], ["--root"]):
        r = sb.sh("for d in /usr /usr/bin /etc; do touch $d/ik-probe 2>/dev/null && echo W $d; done;"
                  " mount -o remount,rw /usr 2>/dev/null && echo REMOUNTED; echo end", *opts)
        assert r.out == "end", r


# ------------------------------------------------ host mounts with locked flags


@pytest.fixture
def host_tmpfs(sb):
    """Mount small tmpfs file systems on the host under the work dir (needs
    root for the test process); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating host mounts needs root")
    mounted = []

    def mount(rel: str, options: str):
        d = sb.mkdir(rel)
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "ik-test", str(d)], check=True)
        mounted.append(d)
        d.chmod(0o755)
        sb.chown(d)
        return d

    yield mount
    for d in reversed(mounted):
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_ro_bind_of_nosuid_nodev_noexec_mount(sb, host_tmpfs):
    # inside a user namespace the read-only remount must keep the locked
    # flags of the source mount, or it fails with EPERM
    d = host_tmpfs("locked", "nosuid,nodev,noexec,size=1m")
    sb.write("locked/f", "data")
    r = sb.sh(f"cat {d}/f; echo; touch {d}/new; grep ' {d} ' /proc/self/mountinfo | tail -n1",
              "-m", f". ro:{d}")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "data", r
    opts = lines[1].split()[5].split(",")    # the top-most mount at that path
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(opts), r
    assert "Read-only file system" in r.stderr, r
    assert not (d / "new").exists()


def test_rw_bind_of_locked_mount_keeps_flags(sb, host_tmpfs):
    d = host_tmpfs("locked", "nosuid,nodev,noexec,size=1m")
    r = sb.sh(f"touch {d}/new; grep ' {d} ' /proc/self/mountinfo | tail -n1", "-m", f". {d}")
    assert r.returncode == 0, r
    opts = r.stdout.split()[5].split(",")
    assert {"rw", "nosuid", "nodev", "noexec"} <= set(opts), r
    assert (d / "new").exists()


@pytest.mark.parametrize("flags", ["ro", "ro,rbind"])
def test_ro_applies_to_submounts(sb, host_tmpfs, flags):
    outer = sb.mkdir("outer")
    inner = host_tmpfs("outer/inner", "size=1m")
    sb.write("outer/inner/f", "in")
    r = sb.sh(f"cat {inner}/f; echo; touch {inner}/new; touch {outer}/new; echo end",
              "-m", f"{flags}:{outer}", cwd=sb.mkdir("cwd"))
    assert r.stdout.split() == ["in", "end"], r
    assert not (inner / "new").exists(), r
    assert not (outer / "new").exists(), r


def test_verbose_logs_steps(sb):
    d = sb.mkdir("data")
    r = sb.run("-v", "-m", f". ro:{d}", "--", "true")
    assert r.returncode == 0, r
    assert "user namespace" in r.stderr, r
    assert f"bind {d} -> {d} ro" in r.stderr, r
    assert "seccomp" in r.stderr, r
    quiet = sb.run("-m", f". ro:{d}", "--", "true")
    assert quiet.stderr == "", quiet
