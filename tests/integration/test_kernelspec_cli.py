"""`isolated-kernel` install / list / show / remove / doctor, end to end.

Each test runs twice: as root and as the unprivileged test user (setpriv),
with private Jupyter directories (see tests/kit/cli.py: the system-wide kernelspec
directory the commands see is a scratch directory in a private mount
namespace, so nothing here touches the real /usr/local/share/jupyter).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from kit.cli import (IPYKERNEL_SPEC, PNG_MAGIC, TEMPLATE, after_dashdash, make_png,
                     make_venv, read_spec, settings, tree_snapshot)
from kit.common import PYTHON

LOGOS = ("logo-32x32.png", "logo-64x64.png")
IPYKERNEL_ARGV = [PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
MiB = 1024 * 1024




def assert_wraps(spec: dict, tools, wrapped_argv: list[str]):
    """A valid kernelspec whose argv is the launcher, the kernelspec dir, --, the wrapped argv unchanged."""
    argv = spec["argv"]
    assert argv[0] == str(tools.launcher), spec
    # One source of truth: no sandbox flags in argv, only the pointer to the metadata.
    assert argv[1:argv.index("--")] == ["--kernelspec", "{resource_dir}"], spec
    assert after_dashdash(argv) == wrapped_argv, spec
    for key in ("display_name", "language", "interrupt_mode", "metadata"):
        assert key in spec, f"kernel.json lacks {key}: {spec}"
    assert isinstance(settings(spec), dict) and settings(spec), f"no metadata.isolated_kernel: {spec}"


def kernel_ok(res: dict) -> dict:
    assert "exception" not in res, f"kernel did not run:\n{res.get('traceback')}\n{res['_run']}"
    assert res["reply"]["status"] == "ok", f"{res['reply']}\n{res.get('stderr')}\n{res['_run']}"
    return json.loads(res["stdout"].strip().splitlines()[-1])


# --------------------------------------------------------------- install


def test_install_default(jup, tools):
    r = jup.ik("install")
    assert r.returncode == 0, str(r)
    if jup.mode == "root":
        d = jup.system_kernels / "python3-isolated"  # system-wide when allowed
    else:
        d = jup.user_kernels / "python3-isolated"    # not allowed: the user's JUPYTER_DATA_DIR
        assert not (jup.system_kernels / "python3-isolated").exists(), str(r)
    assert d.is_dir(), f"not installed in {d}\n{r}"
    assert jup.seen(d) in r.stdout, f"does not say where it installed\n{r}"
    assert "kernel_info" in r.output, f"does not say it proved the kernel starts\n{r}"

    spec = read_spec(d)
    assert spec["display_name"] == "Python 3 (isolated)", spec
    assert spec["language"] == "python", spec
    assert_wraps(spec, tools, IPYKERNEL_ARGV)
    assert settings(spec).get("network") == "none", spec
    assert "." in settings(spec).get("mounts", []), spec
    # Logos: ours (kernelspecs/python3-isolated in the source tree), not ipykernel's.
    for logo in LOGOS:
        data = (d / logo).read_bytes()
        assert data.startswith(PNG_MAGIC), logo
        assert data == (TEMPLATE / logo).read_bytes(), f"{logo} is not the python3-isolated logo"
        if (IPYKERNEL_SPEC / logo).exists():
            assert data != (IPYKERNEL_SPEC / logo).read_bytes(), f"{logo} is ipykernel's"
    for f in d.iterdir():
        assert f.stat().st_mode & 0o004, f"{f} is not world-readable"

    specs = jup.kernelspecs()
    assert specs["python3-isolated"]["resource_dir"] == jup.seen(d), specs.keys()
    assert specs["python3-isolated"]["spec"]["display_name"] == "Python 3 (isolated)"

    # The installed kernel works: HOME is empty, the cwd is there.
    secret = jup.home / f".ik-cli-secret-{jup.token}"
    jup.write(secret, "secret\n", 0o600)
    try:
        res = jup.kernel_exec("python3-isolated", "import os, json; print(json.dumps("
                              "{'home': sorted(os.listdir(os.path.expanduser('~'))), 'cwd': os.getcwd()}))")
    finally:
        secret.unlink()
    seen = kernel_ok(res)
    assert seen["cwd"] == str(jup.work), seen
    assert secret.name not in seen["home"], seen
    assert set(seen["home"]) <= {".ipython", ".local", ".cache", ".config"}, seen


def test_install_user_prefix_name_display_name(jup, tools):
    r = jup.ik("install", "--user", "--name", "mine-isolated", "--display-name", "My Sandboxed Python", "--no-check")
    assert r.returncode == 0, str(r)
    d = jup.user_kernels / "mine-isolated"
    assert d.is_dir(), str(r)
    assert not (jup.system_kernels / "mine-isolated").exists()
    assert "checking" not in r.output, f"--no-check still started the kernel\n{r}"
    spec = read_spec(d)
    assert spec["display_name"] == "My Sandboxed Python", spec
    assert_wraps(spec, tools, IPYKERNEL_ARGV)

    prefix = jup.mkdir(jup.base / "prefix")
    r = jup.ik("install", "--prefix", prefix, "--name", "pfx-isolated")
    assert r.returncode == 0, str(r)
    p = prefix / "share" / "jupyter" / "kernels" / "pfx-isolated"
    assert (p / "kernel.json").is_file(), str(r)
    assert (p / "logo-64x64.png").is_file(), str(r)
    assert not (jup.user_kernels / "pfx-isolated").exists()
    assert not (jup.system_kernels / "pfx-isolated").exists()

    specs = jup.kernelspecs()
    assert specs["mine-isolated"]["resource_dir"] == str(d)
    assert "pfx-isolated" not in specs  # PREFIX is not on the path...
    specs = jup.kernelspecs(env={"JUPYTER_PATH": f"{prefix}/share/jupyter"})
    assert specs["pfx-isolated"]["resource_dir"] == str(p)  # ...until it is

    for combo in (["--user", "--prefix", str(prefix)], ["--user", "--sys-prefix"]):
        r = jup.ik("install", *combo, "--name", "both-isolated", "--no-check")
        assert r.returncode != 0, str(r)
        assert "exclude" in r.output or "--prefix" in r.output, str(r)
    assert not list(jup.base.rglob("both-isolated"))


def test_install_sys_prefix(jup, tools):
    # The Jupyter Python is a venv here: its sys.prefix is not /usr.
    venv = make_venv(tools, jup, "sp", system_site_packages=True)
    env = {"IK_JUPYTER_PYTHON": venv / "bin" / "python"}
    name = f"sp-{jup.token}"  # the venv is the session's
    r = jup.ik("install", "--sys-prefix", "--name", name, env=env)
    assert r.returncode == 0, str(r)
    d = venv / "share" / "jupyter" / "kernels" / name
    assert (d / "kernel.json").is_file(), str(r)
    assert not (jup.user_kernels / name).exists()
    specs = jup.kernelspecs(env=env, python=str(venv / "bin" / "python"))
    assert specs[name]["resource_dir"] == str(d), specs.keys()
    if jup.mode == "user":
        # The system Python's prefix (/usr) is not the user's to write: a clear failure, nothing written.
        r = jup.ik("install", "--sys-prefix", "--name", "usr-isolated", "--no-check")
        assert r.returncode != 0, str(r)
        assert not Path("/usr/share/jupyter/kernels/usr-isolated").exists()
        assert "usr-isolated" in r.stderr or "/usr/share/jupyter" in r.stderr, str(r)


def test_install_replace(jup, tools):
    d = jup.user_kernels / "rep-isolated"
    r = jup.ik("install", "--user", "--name", "rep-isolated", "--display-name", "First", "--no-check")
    assert r.returncode == 0, str(r)
    before = tree_snapshot(d)
    r = jup.ik("install", "--user", "--name", "rep-isolated", "--display-name", "Second", "--no-check")
    assert r.returncode != 0, f"overwrote an existing kernelspec without --replace\n{r}"
    assert "--replace" in r.output, str(r)
    assert tree_snapshot(d) == before, "the existing kernelspec was modified"
    r = jup.ik("install", "--user", "--name", "rep-isolated", "--display-name", "Second", "--replace", "--no-check")
    assert r.returncode == 0, str(r)
    assert read_spec(d)["display_name"] == "Second"


def _bashlike(jup, env: dict | None = None):
    spec = {"argv": IPYKERNEL_ARGV, "display_name": "Bash-like", "language": "bash",
            "metadata": {"bashlike": {"flavour": "test"}}}
    if env:
        spec["env"] = env
    files = {"logo-64x64.png": make_png(64, 64, (20, 90, 200)), "logo-32x32.png": make_png(32, 32, (20, 90, 200)),
             "kernel.js": "define(function () { return {onload: function () { window.bashlike = 1; }}; });\n"}
    return jup.add_kernelspec("bashlike", spec, files), files


def test_install_from_other_kernelspec(jup, tools):
    src, files = _bashlike(jup)
    r = jup.ik("install", "--user", "--from", "bashlike", "--name", "bashlike-isolated")
    assert r.returncode == 0, str(r)
    d = jup.user_kernels / "bashlike-isolated"
    for fname, data in files.items():
        assert (d / fname).is_file(), f"{fname} not copied\n{r}"
        got = (d / fname).read_bytes()
        assert got == (data.encode() if isinstance(data, str) else data), f"{fname} differs from the wrapped one's"
    spec = read_spec(d)
    assert spec["display_name"] == "Bash-like (isolated: bashlike-isolated)", spec
    assert spec["language"] == "bash", spec
    assert_wraps(spec, tools, IPYKERNEL_ARGV)
    assert spec["metadata"].get("bashlike") == {"flavour": "test"}, "the wrapped kernelspec's metadata was lost"
    assert (src / "kernel.json").is_file()  # the source is untouched

    r = jup.ik("install", "--user", "--from", "no-such-kernel", "--name", "x-isolated", "--no-check")
    assert r.returncode != 0, str(r)
    assert "no-such-kernel" in r.stderr and "bashlike" in r.stderr, f"should name what is installed\n{r}"
    r = jup.ik("install", "--user", "--from", "bashlike-isolated", "--name", "double-isolated", "--no-check")
    assert r.returncode != 0, f"wrapped an isolated kernelspec twice\n{r}"
    assert not (jup.user_kernels / "double-isolated").exists()
    assert not (jup.user_kernels / "x-isolated").exists()


def test_install_from_kernelspec_with_env(jup, tools):
    """A wrapped kernelspec's own env section keeps applying to the kernel."""
    _bashlike(jup, env={"BASHLIKE_MODE": "strict"})
    staging = _tmp_staging()
    try:
        r = jup.ik("install", "--user", "--from", "bashlike", "--name", "bashenv-isolated")
        left = {n for n in _tmp_staging() - staging if (Path("/tmp") / n / "bashenv-isolated").exists()}
    finally:
        for name in _tmp_staging() - staging:  # ours only: others may be installing too
            if (Path("/tmp") / name / "bashenv-isolated").exists():
                shutil.rmtree(Path("/tmp") / name, ignore_errors=True)
    assert r.returncode == 0, str(r)
    assert not left, f"staging directories left in /tmp: {left}"
    res = jup.kernel_exec("bashenv-isolated", "import os, json; print(json.dumps(os.environ.get('BASHLIKE_MODE')))")
    assert kernel_ok(res) == "strict", res


def test_install_settings_stored_in_metadata(jup, tools):
    data = jup.mkdir(jup.base / "dataset")
    jup.write(data / "table.csv", "a,b\n1,2\n")
    scratch = jup.mkdir(jup.base / "scratch")
    r = jup.ik("install", "--user", "--name", "cfg-isolated", "--mnt", f"ro:{data}", "--mnt", str(scratch),
               "--share-net", "--memory", "512M", "--limits", "rlimit", "--env", "FOO=bar", "--env", "EQ=a=b")
    assert r.returncode == 0, str(r)

    # Readable with `jupyter kernelspec list --json`, all in metadata.isolated_kernel.
    spec = jup.kernelspecs()["cfg-isolated"]["spec"]
    assert_wraps(spec, tools, IPYKERNEL_ARGV)
    s = settings(spec)
    assert f"ro:{data}" in s.get("mounts", []), s
    assert any(m.endswith(str(scratch)) and not m.startswith("ro:") for m in s["mounts"]), s
    assert s.get("network") == "share", s
    assert s.get("limits", {}).get("memory") in (512 * MiB, "512M", "512MiB"), s
    assert s["limits"].get("mechanism") == "rlimit", s   # RLIMIT_AS whatever cgroups the host has (alloc below)
    assert s.get("setenv", {}).get("FOO") == "bar" and s["setenv"].get("EQ") == "a=b", s
    assert "FOO" not in spec.get("env", {}), "settings in two places"

    # ...and the kernel runs with them.
    host_net = os.readlink("/proc/self/ns/net")
    code = f"""
import errno, json, os
out = {{"FOO": os.environ.get("FOO"), "EQ": os.environ.get("EQ"), "net": os.readlink("/proc/self/ns/net")}}
out["csv"] = open({str(data / 'table.csv')!r}).read()
try:
    open({str(data / 'new.txt')!r}, "w"); out["ro_write"] = "ok"
except OSError as e:
    out["ro_write"] = e.errno
open({str(scratch / 'result.txt')!r}, "w").write("from the kernel")
try:
    b = bytearray(700 * 1024 * 1024); out["alloc"] = "ok"; del b
except MemoryError:
    out["alloc"] = "MemoryError"
print(json.dumps(out))
"""
    seen = kernel_ok(jup.kernel_exec("cfg-isolated", code))
    assert seen["FOO"] == "bar" and seen["EQ"] == "a=b", seen
    assert seen["csv"] == "a,b\n1,2\n", seen
    assert seen["ro_write"] in (errno.EROFS, errno.EACCES, errno.EPERM), seen
    assert (scratch / "result.txt").read_text() == "from the kernel"
    assert seen["net"] == host_net, "--share-net not applied"
    assert seen["alloc"] == "MemoryError", "--memory 512M not applied"

    r = jup.ik("install", "--user", "--name", "badenv-isolated", "--env", "NOEQUALS", "--no-check")
    assert r.returncode != 0 and "NOEQUALS" in r.stderr, str(r)
    assert not (jup.user_kernels / "badenv-isolated").exists()


def test_install_check_independent_of_callers_cwd(jup, tools):
    """`cd / && isolated-kernel install` (a Dockerfile RUN step, sudo from /) must work: the
    kernel's working directory at run time is the notebook's folder, not the installer's."""
    r = jup.ik("install", "--user", "--name", "slash-isolated", cwd="/")
    assert r.returncode == 0, str(r)
    assert (jup.user_kernels / "slash-isolated" / "kernel.json").is_file()


def test_install_memory_too_small_is_explained(jup, tools):
    """A --memory the kernel cannot start with: refused, and the message says the limit is the cause."""
    r = jup.ik("install", "--user", "--name", "small-isolated", "--memory", "256M")
    if r.returncode == 0:
        return  # a limit that only counts what the kernel uses: fine
    assert not (jup.user_kernels / "small-isolated").exists()
    verdict = "\n".join(l for l in r.stderr.splitlines() if l.startswith("isolated-kernel:"))
    assert re.search(r"memory", verdict, re.I), f"the failure does not point at --memory 256M\n{r}"


def test_install_python_venv_detected_and_mounted_readonly(jup, tools):
    venv = make_venv(tools, jup, "sys", system_site_packages=True)
    py = venv / "bin" / "python"
    r = jup.ik("install", "--user", "--name", "venv-isolated", "--python", py)
    assert r.returncode == 0, str(r)
    assert str(venv) in r.stdout, f"does not say what it mounted for the interpreter\n{r}"
    d = jup.user_kernels / "venv-isolated"
    spec = read_spec(d)
    assert_wraps(spec, tools, [str(py), "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    assert f"ro:{venv}" in settings(spec)["mounts"], spec
    assert (d / "logo-64x64.png").read_bytes() == (TEMPLATE / "logo-64x64.png").read_bytes()

    code = f"""
import json, os, sys, ipykernel
out = {{"prefix": sys.prefix, "ipykernel": ipykernel.__file__, "data_visible": os.path.exists({str(jup.data_dir)!r})}}
try:
    open(os.path.join(sys.prefix, "written-by-kernel"), "w"); out["write"] = "ok"
except OSError as e:
    out["write"] = e.errno
out["mount"] = [l.split()[5] for l in open("/proc/self/mountinfo") if l.split()[4] == sys.prefix]
print(json.dumps(out))
"""
    seen = kernel_ok(jup.kernel_exec("venv-isolated", code))
    assert seen["prefix"] == str(venv), seen
    assert seen["write"] in (errno.EROFS, errno.EACCES), seen
    assert seen["mount"] and all("ro" in opts.split(",") for opts in seen["mount"]), seen
    assert seen["data_visible"] is False, "more than the venv was mounted"
    assert not (venv / "written-by-kernel").exists()


def _tmp_staging() -> set[str]:
    return {p.name for p in Path("/tmp").glob("isolated-kernel-install.*")}


def test_install_python_without_ipykernel_fails_cleanly(jup, tools):
    bare = make_venv(tools, jup, "bare", system_site_packages=False)
    r = jup.ik("install", "--user", "--name", "keep-isolated", "--no-check")
    assert r.returncode == 0, str(r)
    keep = jup.user_kernels / "keep-isolated"
    before = tree_snapshot(keep)
    staging = _tmp_staging()

    r = jup.ik("install", "--user", "--name", "keep-isolated", "--replace", "--python", bare / "bin" / "python")
    assert r.returncode != 0, f"installed a kernel that cannot start\n{r}"
    assert tree_snapshot(keep) == before, "a failed --replace changed the user's kernelspec"

    r = jup.ik("install", "--user", "--name", "fresh-isolated", "--python", bare / "bin" / "python")
    assert r.returncode != 0, str(r)
    assert "ipykernel" in r.output, f"does not name the cause\n{r}"
    assert not (jup.user_kernels / "fresh-isolated").exists(), str(r)
    assert not list(jup.base.rglob("fresh-isolated")), str(r)
    assert _tmp_staging() <= staging, "staging directory left in /tmp"
    assert not jup.kernelspecs().get("fresh-isolated")


def test_install_python_without_ipykernel_names_the_fix(jup, tools):
    """The fix for an interpreter without ipykernel is installing it, not a mount."""
    bare = make_venv(tools, jup, "bare", system_site_packages=False)
    r = jup.ik("install", "--user", "--name", "fresh-isolated", "--python", bare / "bin" / "python")
    assert r.returncode != 0, str(r)
    assert re.search(r"install[^\n]*ipykernel|--system-site-packages", r.stderr, re.I), \
        f"no usable fix: the interpreter lacks ipykernel even outside the sandbox\n{r}"


def test_install_needed_directory_reported_then_fixed(jup, tools):
    """An interpreter reached through a symlink outside the system dirs (like a
    pyenv shim or ~/bin/python3): either mounted automatically, or the failure
    names the directory to add, and adding it works."""
    shim = jup.mkdir(jup.base / "tools" / "bin")
    (shim / "python3").symlink_to("/usr/bin/python3")
    jup.chown(shim / "python3")
    jup.add_kernelspec("shimpy", {"argv": [str(shim / "python3"), "-m", "ipykernel_launcher", "-f",
                                           "{connection_file}"], "display_name": "Shim", "language": "python"})
    r = jup.ik("install", "--user", "--from", "shimpy", "--name", "shim-isolated")
    if r.returncode == 0:
        assert any(str(shim).startswith(m.removeprefix("ro:")) for m in settings(read_spec(
            jup.user_kernels / "shim-isolated"))["mounts"] if m != "."), str(r)
        return
    assert not (jup.user_kernels / "shim-isolated").exists()
    m = re.search(r"--mnt (ro:\S+)", r.stderr)
    assert m and str(shim).startswith(m.group(1).removeprefix("ro:").rstrip(")")), f"does not name the dir\n{r}"
    r = jup.ik("install", "--user", "--from", "shimpy", "--name", "shim-isolated", "--mnt", m.group(1).rstrip(")"))
    assert r.returncode == 0, f"the suggested fix does not work\n{r}"


# --------------------------------------------------------------- list / show / remove


def test_list_show_remove(jup, tools):
    data = jup.mkdir(jup.base / "dataset")
    r = jup.ik("install", "--user", "--name", "a-isolated", "--mnt", f"ro:{data}", "--share-net", "--no-check")
    assert r.returncode == 0, str(r)
    plain = jup.add_kernelspec("plainpy", {"argv": IPYKERNEL_ARGV, "display_name": "Plain", "language": "python"})
    d = jup.user_kernels / "a-isolated"

    r = jup.ik("list")
    assert r.returncode == 0, str(r)
    assert "a-isolated" in r.stdout and str(d) in r.stdout, str(r)
    assert str(data) in r.stdout and "share" in r.stdout, f"key settings missing\n{r}"
    assert "plainpy" not in r.stdout, str(r)

    r = jup.ik("show", "a-isolated")
    assert r.returncode == 0, str(r)
    shown = json.loads(r.stdout)
    assert shown["name"] == "a-isolated" and shown["resource_dir"] == str(d), shown
    plan = next(v for k, v in shown.items() if k.startswith("plan"))
    mounts = plan["mounts"]
    assert any(m.get("dest") == str(data) and m.get("access") == "ro" for m in mounts), mounts
    assert any(m.get("dest") == str(jup.work) for m in mounts), "the cwd mount is not resolved"
    assert after_dashdash(shown["kernel.json"]["argv"]) == IPYKERNEL_ARGV

    for cmd in ("show", "remove"):
        r = jup.ik(cmd, "plainpy")
        assert r.returncode != 0, str(r)
        assert "not an isolated" in r.stderr, str(r)
    assert (plain / "kernel.json").is_file(), "remove deleted a non-isolated kernelspec"

    r = jup.ik("remove", "a-isolated")
    assert r.returncode == 0, str(r)
    assert not d.exists(), str(r)
    assert "a-isolated" not in jup.ik("list").stdout
    r = jup.ik("remove", "a-isolated")
    assert r.returncode != 0, str(r)
    r = jup.ik("list")
    assert r.returncode == 0 and "No isolated kernelspecs" in r.stdout, str(r)

    if jup.mode == "user":
        # A system-wide one (root's) cannot be removed by the user: a clear error, nothing deleted.
        sysk = jup.system_kernels / "sys-isolated"
        sysk.mkdir(parents=True)
        (sysk / "kernel.json").write_text(json.dumps({
            "argv": [str(tools.launcher), "--kernelspec", "{resource_dir}", "--", *IPYKERNEL_ARGV],
            "display_name": "System", "language": "python", "metadata": {"isolated_kernel": {"mounts": ["."]}}}))
        (sysk / "logo-64x64.png").write_bytes(make_png(64, 64, (1, 2, 3)))
        r = jup.ik("remove", "sys-isolated")
        assert r.returncode != 0, str(r)
        assert sorted(p.name for p in sysk.iterdir()) == ["kernel.json", "logo-64x64.png"], str(r)


def test_install_rejects_invalid_names(jup, tools):
    """Kernelspec names are [a-zA-Z0-9._-]+ (jupyter kernelspec install refuses others); above all,
    a name must never make install write, or --replace delete, outside its own directory."""
    r = jup.ik("install", "--user", "--name", "sentinel", "--no-check")
    assert r.returncode == 0, str(r)
    escaped = f"escaped-{jup.token}"
    strays = [Path("/tmp") / escaped, jup.data_dir / escaped]  # where a staging or install path would go
    problems = []
    try:
        for name in ("", f"../{escaped}", "bad name"):
            before = sorted(str(p.relative_to(jup.base)) for p in jup.base.rglob("*"))
            r = jup.ik("install", "--user", "--name", name, "--replace", "--no-check")
            if r.returncode == 0:
                problems.append(f"accepted the kernelspec name {name!r}\n{r}")
            if not (jup.user_kernels / "sentinel" / "kernel.json").is_file():
                problems.append(f"--name {name!r} --replace deleted the other kernelspecs")
                jup.ik("install", "--user", "--name", "sentinel", "--no-check", "--replace")
            elif sorted(str(p.relative_to(jup.base)) for p in jup.base.rglob("*")) != before:
                problems.append(f"--name {name!r}: files written")
            for stray in strays:
                if stray.exists():
                    problems.append(f"--name {name!r}: wrote {stray}")
                    shutil.rmtree(stray, ignore_errors=True)
    finally:
        for stray in strays:
            shutil.rmtree(stray, ignore_errors=True)
    assert not problems, "\n".join(problems)


def test_install_python_missing_interpreter(jup, tools):
    missing = jup.base / "no-such-env" / "bin" / "python"
    r = jup.ik("install", "--user", "--name", "ghost-isolated", "--python", missing)
    assert r.returncode != 0, str(r)
    assert str(missing) in r.stderr, str(r)
    assert re.search(r"not found|no such file|does not exist", r.stderr, re.I), f"does not say it is missing\n{r}"
    assert not (jup.user_kernels / "ghost-isolated").exists()


def test_install_checks_that_the_pool_preload_modules_import(jup, tools):
    """`--pool-preload` names modules a waiting pooled kernel imports: the
    install check imports them in the kernel it starts (in the sandbox), so a
    typo or a module the kernel's Python lacks is refused at install (exit 2,
    one line naming it), not found later as a pool that never fills; a name
    that is not a module name is refused before anything starts."""
    r = jup.ik("install", "--user", "--name", "pre-isolated", "--pool", "1", "--pool-preload", "colorsys,ik_nope")
    assert r.returncode == 2, str(r)
    lines = [l for l in r.stderr.splitlines() if l.startswith("isolated-kernel:")]
    assert len(lines) == 1 and "--pool-preload ik_nope: ModuleNotFoundError" in lines[0], str(r)
    assert not (jup.user_kernels / "pre-isolated").exists()
    r = jup.ik("install", "--user", "--name", "pre-isolated", "--pool", "1", "--pool-preload", "os;rm")
    assert r.returncode == 2 and "not a Python module name" in r.stderr and "checking" not in r.stdout, str(r)
    r = jup.ik("install", "--user", "--name", "pre-isolated", "--pool-preload", "colorsys")
    assert r.returncode == 2 and "needs --pool" in r.stderr, str(r)
    r = jup.ik("install", "--user", "--name", "pre-isolated", "--pool", "1", "--pool-preload", "colorsys",
               "--pool-preload", "email.parser")
    assert r.returncode == 0 and "the --pool-preload modules import" in r.stdout, str(r)
    spec = json.loads((jup.user_kernels / "pre-isolated" / "kernel.json").read_text())
    assert spec["metadata"]["isolated_kernel"]["pool_preload"] == ["colorsys", "email.parser"], spec
    r = jup.ik("list")
    assert "pool=1 preload=colorsys,email.parser" in r.stdout, str(r)


# --------------------------------------------------------------- doctor


LINE = re.compile(r"^(PASS|WARN|FAIL)\s+\S")


def doctor_lines(out: str) -> list[str]:
    return [l for l in out.splitlines() if LINE.match(l)]


def test_doctor_passes(jup, tools):
    r = jup.ik("install", "--user", "--name", "doc-isolated", "--no-check")
    assert r.returncode == 0, str(r)
    r = jup.ik("doctor")
    assert r.returncode == 0, str(r)
    lines = doctor_lines(r.stdout)
    body = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) >= len(body) - 1, f"lines that are not PASS/WARN/FAIL\n{r}"
    assert not [l for l in lines if l.startswith("FAIL")], str(r)
    for what in ("user namespaces", "seccomp", "Linux kernel"):
        assert any(l.startswith("PASS") and what in l for l in lines), f"no PASS for {what}\n{r}"
    assert any("cgroup" in l for l in lines), f"cgroup delegation not checked\n{r}"
    assert re.search(r"^PASS\s+kernel doc-isolated\s+ready in \d+(\.\d+)? s", r.stdout, re.M), str(r)


def test_doctor_fails_on_broken_kernelspec(jup, tools):
    for name in ("good-isolated", "broken-isolated"):
        r = jup.ik("install", "--user", "--name", name, "--no-check")
        assert r.returncode == 0, str(r)
    missing = jup.base / "no-such-dir"
    p = jup.user_kernels / "broken-isolated" / "kernel.json"
    spec = json.loads(p.read_text())
    spec["metadata"]["isolated_kernel"]["mounts"].append(f"ro:{missing}")
    jup.write(p, json.dumps(spec))

    r = jup.ik("doctor")
    assert r.returncode != 0, str(r)
    fails = [l for l in doctor_lines(r.stdout) if l.startswith("FAIL")]
    assert len(fails) == 1 and "broken-isolated" in fails[0], str(r)
    assert str(missing) in fails[0], f"does not name the cause\n{r}"
    assert re.search(r"^PASS\s+kernel good-isolated\s+ready in", r.stdout, re.M), str(r)

    r = jup.ik("doctor", "--no-kernels")
    assert r.returncode == 0, str(r)
    assert "broken-isolated" not in r.stdout


def test_doctor_fails_on_a_pool_preload_the_kernel_cannot_import(jup, tools):
    r = jup.ik("install", "--user", "--name", "pre-isolated", "--pool", "1", "--pool-preload", "ik_nope",
               "--no-check")
    assert r.returncode == 0, str(r)
    r = jup.ik("doctor")
    assert r.returncode != 0, str(r)
    fails = [l for l in doctor_lines(r.stdout) if l.startswith("FAIL")]
    assert len(fails) == 1 and "pre-isolated" in fails[0] and "pool_preload ik_nope: ModuleNotFoundError" in fails[0], \
        str(r)
