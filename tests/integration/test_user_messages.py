"""Issue 14: what a new user meets, fed the exact inputs of the report.

Each bad input gets one clear line and its own status (2 for usage), no
crash; notes that are needed to understand a result are printed without -v.
Runs as root and as the unprivileged test user (the `sb` and `jup` fixtures).
"""

from __future__ import annotations

import json
import re

import pytest

from kit.cli import read_spec
from kit.common import PYTHON

IPYKERNEL_ARGV = [PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def one_line(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    return lines[0]


# --------------------------------------------------------------- isolate


@pytest.mark.parametrize("size", ["10", "0", "1M", "4095K"])
def test_memory_below_floor_is_refused(sb, size):
    """`isolate --memory 10` used to die of SIGSEGV (139) without a word."""
    r = sb.run("--memory", size, "--", "true")
    assert r.returncode == 2, r
    line = one_line(r.stderr)
    assert "--memory" in line and "4M" in line, r


def test_memory_at_floor_runs(sb):
    r = sb.run("--memory", "4M", "--limits", "rlimit", "--", "/bin/sh", "-c", "echo ok")
    assert r.returncode == 0 and r.stdout == "ok\n", r


def test_memory_too_small_for_python_is_explained(sb):
    """`--memory 10M python3`: the loader fails ("failed to map segment", 127); say it is the limit."""
    r = sb.run("--memory", "10M", "--limits", "rlimit", "--", "python3", "-c", "print(1)")
    assert r.returncode == 127, r
    assert "failed to map segment" in r.stderr, r
    assert "probably the --memory limit of 10M (RLIMIT_AS)" in r.stderr, r


def test_sigsegv_under_address_space_limit_is_explained(sb):
    r = sb.run("--memory", "64M", "--limits", "rlimit", "--", "/bin/sh", "-c", "kill -SEGV $$")
    assert r.returncode == 128 + 11, r
    assert re.search(r"SIGSEGV, probably at the --memory limit of 64M \(RLIMIT_AS\)", r.stderr), r
    # Without a memory limit, no such guess.
    r = sb.run("--", "/bin/sh", "-c", "kill -SEGV $$")
    assert r.returncode == 128 + 11 and "--memory" not in r.stderr, r


@pytest.mark.parametrize("flag", ["--wall-time", "--cpu-time"])
def test_zero_time_limit_is_refused(sb, flag):
    r = sb.run(flag, "0", "--", "true")
    assert r.returncode == 2, r
    assert flag in one_line(r.stderr) and "at least 1s" in r.stderr, r


def test_zero_limit_in_config_is_refused(sb):
    cfg = sb.write("cfg.json", json.dumps({"limits": {"memory": "10", "wall_time": 0}}))
    r = sb.run("--config", cfg, "--", "true")
    assert r.returncode == 2, r
    assert "at least" in one_line(r.stderr), r


def test_unmounted_cwd_is_noted(sb):
    """`isolate -m ro:DIR prog`: the program starts in HOME; say so, and why."""
    sb.write("code.py", "print('hi')\n")
    r = sb.run("-m", "ro:/usr", "python3", "code.py")
    assert r.returncode == 2, r
    notes = [l for l in r.stderr.splitlines() if "note:" in l]
    assert len(notes) == 1, r
    assert str(sb.workdir) in notes[0] and "not mounted" in notes[0], r
    assert str(sb.home) in notes[0] and "-m ." in notes[0], r
    # Mounted: no note.
    r = sb.run("python3", "code.py")
    assert r.returncode == 0 and r.stdout == "hi\n" and "note:" not in r.stderr, r


def test_unknown_mount_flag_is_named(sb):
    r = sb.run("-m", "foo:bar:/x", "--", "true")
    assert r.returncode == 2, r
    line = one_line(r.stderr)
    assert "'foo' is not a flag (ro, rw, rbind)" in line, r
    assert "No such file or directory" not in line, r
    r = sb.run("-m", "ro,rx:/usr", "--", "true")
    assert r.returncode == 2 and "'rx' is not a flag" in r.stderr, r


def test_config_directory_is_named(sb):
    d = sb.mkdir("confdir")
    r = sb.run("--config", d, "--", "true")
    assert r.returncode == 2, r
    line = one_line(r.stderr)
    assert str(d) in line and "is a directory" in line and "end of input" not in line, r


def test_config_syntax_error_has_line_and_column(sb):
    cfg = sb.write("bad.json", '{\n  "mounts": [".",]\n}\n')
    r = sb.run("--config", cfg, "--", "true")
    assert r.returncode == 2, r
    line = one_line(r.stderr)
    assert f"{cfg}:2:18: invalid JSON: " in line, r
    assert "json.exception" not in line and "parse_error" not in line, r


# --------------------------------------------------------------- isolated-kernel


def _launcher_spec(tools, metadata=None, flags=("--kernelspec", "{resource_dir}"), name="X"):
    spec = {"argv": [str(tools.launcher), *flags, "--", *IPYKERNEL_ARGV], "display_name": name,
            "language": "python"}
    if metadata is not None:
        spec["metadata"] = metadata
    return spec


def test_unknown_command(jup):
    r = jup.ik("frobnicate")
    assert r.returncode == 2, str(r)
    line = one_line(r.stderr)
    assert "unknown command 'frobnicate'" in line, str(r)
    for c in ("install", "list", "show", "remove", "doctor"):
        assert c in line, str(r)
    r = jup.ik()
    assert r.returncode == 2 and "a command is required (commands: install, list" in one_line(r.stderr), str(r)


def test_list_survives_string_metadata(jup, tools):
    """`"metadata": {"isolated_kernel": "mounts=."}` aborted `list` (134, uncaught type_error)."""
    jup.add_kernelspec("strmeta", _launcher_spec(tools, {"isolated_kernel": "mounts=."}))
    jup.add_kernelspec("good", _launcher_spec(tools, {"isolated_kernel": {"mounts": ["."]}}, name="Good one"))
    r = jup.ik("list")
    assert r.returncode == 1, str(r)
    assert "terminate" not in r.stderr, str(r)
    fail = [l for l in r.stdout.splitlines() if l.startswith("strmeta")]
    assert len(fail) == 1 and "FAIL" in fail[0] and "must be a JSON object" in fail[0], str(r)
    assert re.search(r"^good\s+Good one$", r.stdout, re.M), str(r)
    r = jup.ik("show", "strmeta")
    assert r.returncode == 2 and "must be a JSON object" in one_line(r.stderr), str(r)
    r = jup.ik("doctor")
    assert r.returncode == 1, str(r)
    assert re.search(r"^FAIL\s+kernel strmeta\s.*must be a JSON object", r.stdout, re.M), str(r)


@pytest.mark.parametrize("bad", [{"argv": "x"}, {"argv": [1, 2]}, {"argv": [], "metadata": 3},
                                 {"metadata": {"isolated_kernel": {"limits": "4G"}}}, [1], "str"])
def test_list_survives_odd_kernel_json(jup, tools, bad):
    if isinstance(bad, dict) and "argv" not in bad:
        bad = {**_launcher_spec(tools), **bad}
    d = jup.mkdir(jup.jupyter_path / "kernels" / "odd")
    jup.write(d / "kernel.json", json.dumps(bad))
    jup.add_kernelspec("good", _launcher_spec(tools, {"isolated_kernel": {"mounts": ["."]}}, name="Good one"))
    r = jup.ik("list")
    assert r.returncode in (0, 1) and "terminate" not in r.stderr, str(r)
    assert re.search(r"^good\s+Good one$", r.stdout, re.M), str(r)


def test_invalid_kernel_json_is_named(jup, tools):
    """show/remove said "no kernelspec named" while `jupyter kernelspec list` shows it."""
    d = jup.mkdir(jup.jupyter_path / "kernels" / "broken")
    jup.write(d / "kernel.json", '{\n "argv": ["x",\n "display_name": "B"\n}\n')
    r = jup.run([PYTHON, "-m", "jupyter_client.kernelspecapp", "list"])
    assert re.search(r"^\s*broken\s", r.stdout, re.M), f"jupyter kernelspec list does not show it\n{r}"
    for cmd in ("show", "remove"):
        r = jup.ik(cmd, "broken")
        assert r.returncode == 2, str(r)
        line = one_line(r.stderr)
        assert f"{d}/kernel.json:3:" in line and "invalid JSON" in line, str(r)
        assert "no kernelspec named" not in line and "json.exception" not in line, str(r)
    assert (d / "kernel.json").is_file()
    r = jup.ik("list")
    assert r.returncode == 1 and re.search(r"^broken\s+FAIL: .*kernel.json:3:\d+: invalid JSON", r.stdout, re.M), str(r)


def test_install_missing_mount_is_one_usage_line(jup):
    r = jup.ik("install", "--mnt", "ro:/missing", "--name", "course")
    assert r.returncode == 2, str(r)
    line = one_line(r.stderr)
    assert "/missing" in line and "No such file or directory" in line, str(r)
    assert "kernel stderr" not in r.output and "RuntimeError" not in r.output, str(r)
    assert not (jup.user_kernels / "course").exists() and not (jup.system_kernels / "course").exists()


def test_install_print_plan_prints_and_installs_nothing(jup, tools):
    data = jup.mkdir(jup.base / "data")
    r = jup.ik("install", "--user", "--name", "course", "--mnt", f"ro:{data}", "--print-plan")
    assert r.returncode == 0, str(r)
    out = json.loads(r.stdout)
    assert out["kernel.json"]["argv"][0] == str(tools.launcher), out
    assert f"ro:{data}" in out["kernel.json"]["metadata"]["isolated_kernel"]["mounts"], out
    plan = next(v for k, v in out.items() if k.startswith("plan"))
    assert any(m.get("dest") == str(data) and m.get("access") == "ro" for m in plan["mounts"]), plan
    assert not (jup.user_kernels / "course").exists(), str(r)
    assert "checking" not in r.output, "started a kernel"


def test_hand_written_kernelspec_settings_are_read(jup, tools):
    """docs/nbgrader.md's migration path: settings as launcher flags in argv."""
    data = jup.mkdir(jup.base / "data")
    d = jup.add_kernelspec("handmade", _launcher_spec(
        tools, flags=("--mnt", f". ro:{data}", "--memory", "2G", "--share-net"), name="Hand made"))
    r = jup.ik("list")
    assert r.returncode == 0, str(r)
    assert f"mounts=[. ro:{data}]" in r.stdout and "network=share" in r.stdout, str(r)
    assert "memory=2G" in r.stdout, str(r)
    r = jup.ik("show", "handmade")
    assert r.returncode == 0, str(r)
    shown = json.loads(r.stdout)
    plan = next(v for k, v in shown.items() if k.startswith("plan"))
    assert any(m.get("dest") == str(data) and m.get("access") == "ro" for m in plan["mounts"]), plan
    assert shown["resource_dir"] == str(d)


def test_display_name_includes_name(jup):
    r = jup.ik("install", "--user", "--name", "course", "--no-check", "--memory", "4G", "--cpu-time", "600")
    assert r.returncode == 0, str(r)
    assert read_spec(jup.user_kernels / "course")["display_name"] == "Python 3 (isolated: course)"
    r = jup.ik("list")
    assert r.returncode == 0, str(r)
    assert "memory=4G" in r.stdout and "cpu_time=10m" in r.stdout, str(r)
    assert "4294967296" not in r.stdout, str(r)
    r = jup.ik("install", "--user", "--no-check")
    assert r.returncode == 0, str(r)
    assert read_spec(jup.user_kernels / "python3-isolated")["display_name"] == "Python 3 (isolated)"


def test_show_uses_jupyter_runtime_dir(jup):
    r = jup.ik("install", "--user", "--name", "rt", "--no-check")
    assert r.returncode == 0, str(r)
    r = jup.ik("show", "rt")
    assert r.returncode == 0, str(r)
    dests = json.dumps(json.loads(r.stdout))
    assert f"{jup.runtime_dir}/kernel-EXAMPLE.json" in dests, str(r)
    assert ".local/share/jupyter/runtime" not in dests, str(r)


def test_print_plan_in_a_non_utf8_directory(sb):
    """A host path that is not UTF-8 aborted --print-plan (nlohmann type_error 316, status 134)."""
    import os
    d = sb.mkdir(os.fsdecode(b"dir-\xff"))
    r = subprocess_run_bytes(sb, ["--print-plan"], cwd=d)
    assert r.returncode == 0, r
    plan = json.loads(r.stdout)
    assert plan["cwd"].endswith("dir-\ufffd"), plan["cwd"]


def subprocess_run_bytes(sb, args, cwd):
    import subprocess
    p = subprocess.run(sb.argv(args), cwd=cwd, env=sb.env(None, cwd), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    return type("R", (), {"returncode": p.returncode, "stdout": p.stdout.decode("utf-8"),
                          "stderr": p.stderr.decode("utf-8", "replace"),
                          "__repr__": lambda self: f"exit {p.returncode}\n{p.stderr!r}"})()


def test_install_non_utf8_mount_is_one_usage_line(jup):
    import os
    d = jup.mkdir(jup.base / os.fsdecode(b"data-\xff"))
    r = jup.run([jup.tools.ik, "install", "--user", "--name", "bad", "--no-check", "--mnt", f"ro:{d}"])
    assert r.returncode == 2, str(r)
    assert "not valid UTF-8" in one_line(r.stderr), str(r)
    assert not (jup.user_kernels / "bad").exists()
    r = jup.run([jup.tools.ik, "install", "--user", "--name", "bad", "--print-plan", "--mnt", f"ro:{d}"])
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "bad", str(r)


def test_migrated_isolate_sh_kernelspec_is_read(jup, tools):
    """docs/nbgrader.md section 8, quick fix: isolate.sh's kernelspec with the launcher as argv[0]."""
    modules = jup.mkdir(jup.base / "modules")
    conda = jup.mkdir(jup.base / "conda")
    jup.add_kernelspec("migrated", {
        "argv": [str(tools.launcher), "--mnt", f"{modules}/ {conda} {{connection_file}} .", "--no-net", "--",
                 PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "python3-isolated", "language": "python"})
    r = jup.ik("list")
    assert r.returncode == 0, str(r)
    assert f"mounts=[{modules}/ {conda} {{connection_file}} .]" in r.stdout, str(r)
    r = jup.ik("show", "migrated")
    assert r.returncode == 0, str(r)
    plan = next(v for k, v in json.loads(r.stdout).items() if k.startswith("plan"))
    conn = f"{jup.runtime_dir}/kernel-EXAMPLE.json"
    assert any(m.get("dest") == str(conda) for m in plan["mounts"]), plan
    # The connection file is the kernel's private copy, never a bind of the host's.
    at_conn = [m for m in plan["mounts"] if m.get("dest") == conn]
    assert at_conn and all(m.get("op") == "file" and not m.get("src") for m in at_conn), at_conn
