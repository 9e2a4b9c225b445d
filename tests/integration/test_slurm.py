"""isolated-kernel on a real one-node Slurm cluster (Debian's slurmctld,
slurmd and munge), configured in a temporary directory, started before the
first test of this file and stopped after the last (tests/kit/slurm.py). Jobs
are submitted as root and as the unprivileged user iktest (the `jup`
fixture). The cluster's second node, ik-nouserns (partition `nouserns`), is
a real node on which user namespaces are disabled: its slurmd runs in a user
namespace whose user.max_user_namespaces is 0 (see tests/kit/slurm.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from kit.common import processes_matching
from kit.slurm import NOUSERNS_NODE, NODE, ClusterError, SlurmCluster, missing_programs, PACKAGES


@pytest.fixture(scope="session")
def slurm():
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster's daemons must be started as root")
    if missing := missing_programs():
        pytest.fail(f"missing {' '.join(missing)}: run scripts/install-deps "
                    f"(apt-get install --no-install-recommends {PACKAGES})")
    # Memory for a few array tasks of 1G kernels at once (the node's size is
    # configured, not probed: SlurmdParameters=config_overrides).
    c = SlurmCluster(Path(tempfile.mkdtemp(prefix="ik-slurm-", dir="/tmp")), memory_mb=12288, nouserns_node=True)
    try:
        c.start()
    except ClusterError as e:
        c.remove()
        pytest.fail(str(e))
    yield c
    forced = c.stop()
    c.remove()
    assert not forced, f"had to kill {forced} when stopping the cluster"


def slurm_env(c: SlurmCluster) -> dict:
    return {"SLURM_CONF": str(c.conf)}


def wait_gone(c: SlurmCluster, job: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job not in {j.split("_")[0] for j in c.jobs()}:
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job} still queued after {timeout} s: {c.jobs()}")


# ------------------------------------------------------------------ the cluster


def test_array_tasks_run_isolate(slurm, jup):
    """Each task of a job array starts a sandbox as the submitting user."""
    out = jup.mkdir(jup.work / "out")
    script = (f"echo user=$(id -un) task=$SLURM_ARRAY_TASK_ID; "
              f"{jup.tools.bin}/isolate -- /bin/sh -c 'echo inside=$(id -u)'; echo rc=$?")
    r = jup.run(["sbatch", "--parsable", "--array=0-2", "-o", f"{out}/%A_%a.out", "--wrap", script],
                env=slurm_env(slurm))
    assert r.returncode == 0, r
    job = r.stdout.strip().split(";")[0]
    wait_gone(slurm, job)
    texts = sorted((out / f"{job}_{i}.out").read_text() for i in range(3))
    for i, t in enumerate(texts):
        assert f"user={jup.user} task={i}\n" in t, t
        assert "rc=0\n" in t and re.search(r"^inside=\d+$", t, re.M), t


def test_nouserns_node_really_refuses_user_namespaces(slurm, jup):
    """The node the disabled-namespace tests use: isolate fails there, as on
    a compute node whose admin set user.max_user_namespaces=0."""
    r = jup.run(["srun", "-p", "nouserns", "-N1", "--", f"{jup.tools.bin}/isolate", "--", "/bin/true"],
                env=slurm_env(slurm), timeout=60)
    assert r.returncode == 125, r
    assert "user.max_user_namespaces is 0" in r.stderr, r


# ------------------------------------------------------------------ doctor --slurm


def stderr_line(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r
    return lines[0]


def test_doctor_slurm_checks_a_compute_node(slurm, jup):
    r = jup.ik("doctor", "--slurm", "--no-kernels", env=slurm_env(slurm), timeout=120)
    assert r.returncode == 0, r
    assert re.search(rf"^PASS  Slurm node +{NODE} \(job \d+\)$", r.stdout, re.M), r
    assert re.search(r"^PASS  user namespaces ", r.stdout, re.M), r
    assert r.stdout.rstrip().endswith("All required checks passed."), r


def test_doctor_slurm_names_the_sysctl_when_the_node_has_no_user_namespaces(slurm, jup):
    r = jup.ik("doctor", "--slurm", "--no-kernels", "--slurm-opt=--partition=nouserns",
               env=slurm_env(slurm), timeout=120)
    assert r.returncode == 1, r
    assert re.search(rf"^PASS  Slurm node +{NOUSERNS_NODE} ", r.stdout, re.M), r
    assert re.search(r"^FAIL  user namespaces ", r.stdout, re.M), r
    last = r.stdout.rstrip().splitlines()[-1]
    assert last.startswith(f"User namespaces are disabled on compute node {NOUSERNS_NODE}"), r
    assert "ask the cluster admins" in last.lower() and "sysctl -w user.max_user_namespaces=15000" in last, r


def test_doctor_slurm_bad_partition_is_one_line(slurm, jup):
    r = jup.ik("doctor", "--slurm", "--slurm-opt=--partition=no-such-partition", env=slurm_env(slurm))
    assert r.returncode == 125, r
    line = stderr_line(r)
    assert "no-such-partition" in line and "sinfo" in line, line


def test_doctor_slurm_program_missing_on_the_node(slurm, jup):
    """isolated-kernel at a path only the submitter sees (a private tmpfs)."""
    if jup.mode != "root":
        pytest.skip("mounting the private tmpfs needs root")
    priv = jup.mkdir(jup.base / "private")
    script = (f'mount -t tmpfs ik-private "{priv}" && cp "{jup.tools.ik}" "{priv}/" && '
              f'exec "{priv}/isolated-kernel" doctor --slurm --no-kernels')
    r = jup.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
                env=slurm_env(slurm))
    assert r.returncode == 125, r
    line = stderr_line(r)
    assert "No such file or directory" in line and "same path on the compute nodes" in line, line


def test_doctor_slurm_without_slurm_commands(jup):
    # A PATH with only what the test's own wrapper needs (mount), no srun.
    bindir = jup.mkdir(jup.base / "no-slurm-bin")
    (bindir / "mount").symlink_to("/usr/bin/mount")
    r = jup.ik("doctor", "--slurm", env={"PATH": str(bindir)})
    assert r.returncode == 2, r
    line = stderr_line(r)
    assert "srun not found on PATH" in line and "slurm-client" in line, line
    r = jup.ik("doctor", "--slurm-opt=--partition=x")
    assert r.returncode == 2 and "--slurm-opt needs --slurm" in stderr_line(r), r


# ------------------------------------------------------------------ run --slurm

KERNEL = "slurm-isolated"
WORKER = Path(__file__).resolve().parents[2] / "share" / "run" / "ik_run_notebook.py"

MIXED = {
    "ok": ["x = 6 * 7", "print(x)"],
    "exception": ["x = 1", "1 / 0", "print('not reached')"],
    "loop": ["while True:\n    pass"],
    "bomb": ["a = []\nwhile True:\n    a.append(bytearray(64 << 20))"],
    "exit": ["import os\nos._exit(3)"],
}


@pytest.fixture(scope="session")
def installed_worker(tools):
    """The worker where an installation has it: bin/../share/isolated-kernel/."""
    dest = tools.root / "share" / "isolated-kernel" / "ik_run_notebook.py"
    shutil.copy2(WORKER, dest)
    dest.chmod(0o644)
    return dest


def nb_text(cells: list[str]) -> str:
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nbformat.writes(nb)


@pytest.fixture
def runner(slurm, jup, installed_worker):
    """jup with an isolated kernelspec installed and the cluster's SLURM_CONF."""
    r = jup.ik("install", "--user", "--name", KERNEL, "--no-check")
    assert r.returncode == 0, r
    return jup


def read_report(path: Path) -> dict:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["notebook"]: r for r in recs}


def verdicts(rep: dict) -> dict:
    return {k: (v["status"], v.get("cell"), v.get("ename")) for k, v in rep.items()}


def outputs(path: Path) -> list:
    import nbformat
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return [(c.source, c.get("outputs")) for c in nb.cells]


def job_gone(c: SlurmCluster, out: Path) -> None:
    job = json.loads((out / "slurm" / "job.json").read_text())["job_id"]
    assert job not in {j.split("_")[0] for j in c.jobs()}, f"job {job} still queued: {c.jobs()}"


def assert_no_kernels(jup, grace: float = 15.0) -> None:
    deadline = time.monotonic() + grace
    while (procs := processes_matching([str(jup.tools.launcher), str(jup.tools.bin / "isolate")])) and \
            any(str(jup.base) in p[1] for p in procs):
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: {procs}")
        time.sleep(0.2)


def test_run_slurm_mixed_batch_equals_the_local_run(slurm, runner):
    j = runner
    b = j.mkdir(j.work / "batch")
    for name, cells in MIXED.items():
        j.write(b / f"{name}.ipynb", nb_text(cells))
    j.write(b / "malformed.ipynb", '{"cells": [')
    j.mkdir(j.work / "empty")
    # The per-cell timeout must stay well above the time the memory bomb needs to reach its limit (~1 s of CPU);
    # at 4 s a starved CPU (load 21) once let the timeout win and the verdict changed.
    common = ["--kernel", KERNEL, "--timeout", "8s", "--memory", "1G", "batch", "empty"]
    local = j.ik("run", "-j", "2", "-o", "local", *common, cwd=j.work, timeout=600)
    assert local.returncode == 1, local
    t0 = time.monotonic()
    r = j.ik("run", "--slurm", "--tasks", "3", "-j", "1", "-o", "cluster", "--report", "grades.csv", *common,
             env=slurm_env(slurm), cwd=j.work, timeout=600)
    assert r.returncode == 1, r
    print(f"submission to summary: {time.monotonic() - t0:.1f} s")
    ours, theirs = read_report(j.work / "cluster" / "report.jsonl"), read_report(j.work / "local" / "report.jsonl")
    assert verdicts(ours) == verdicts(theirs), (verdicts(ours), r)
    assert verdicts(ours)["batch/bomb.ipynb"][0] == "memory-limit" and verdicts(ours)["empty"][0] == "could-not-start"
    # Every notebook ran in an array task, as the unprivileged user when that is who submitted.
    assert {v["share"] for k, v in ours.items() if k != "empty"} == {"0/3", "1/3", "2/3"}, ours
    for name in MIXED:
        assert outputs(j.work / "cluster" / "batch" / f"{name}.ipynb") == \
            outputs(j.work / "local" / "batch" / f"{name}.ipynb"), name
    # The same table and the report asked for.
    for name, rec in ours.items():
        assert any(line.startswith(name) and rec["status"] in line for line in r.stdout.splitlines()), r
    assert "7 notebooks: 1 ok, 6 failed" in r.stdout, r
    assert (j.work / "grades.csv").read_text().count("\n") == 8
    # What the job asked for: 1 slot of 1G + 256M, + 512M; one task per third.
    script = (j.work / "cluster" / "slurm" / "run.sbatch").read_text()
    assert "#SBATCH --array=0-2\n" in script and "#SBATCH --mem=1792M\n" in script, script
    assert "submitted Slurm job" in r.stderr and "array task 2 running on ik-node" in r.stderr, r
    job_gone(slurm, j.work / "cluster")
    assert_no_kernels(j)


def test_run_slurm_no_wait_then_collect(slurm, runner):
    j = runner
    d = j.mkdir(j.work / "nbs")
    j.write(d / "good.ipynb", nb_text(["print('good')"]))
    j.write(d / "bad.ipynb", nb_text(["raise ValueError('bad')"]))
    r = j.ik("run", "--slurm", "--no-wait", "--kernel", KERNEL, "-o", "out", "nbs", env=slurm_env(slurm), cwd=j.work)
    assert r.returncode == 0, r
    job = r.stdout.strip()
    assert re.fullmatch(r"\d+", job), r
    assert "isolated-kernel run --collect" in r.stderr, r
    # Right away: still running (or pending); says so, exit 1.
    early = j.ik("run", "--collect", "out", env=slurm_env(slurm), cwd=j.work)
    if job in {x.split("_")[0] for x in slurm.jobs()}:
        assert early.returncode == 1 and f"Slurm job {job} is still running" in early.stderr, early
    wait_gone(slurm, job)
    c = j.ik("run", "--collect", "out", env=slurm_env(slurm), cwd=j.work)
    assert c.returncode == 1, c
    rep = read_report(j.work / "out" / "report.jsonl")
    assert verdicts(rep) == {"nbs/bad.ipynb": ("error", 1, "ValueError"), "nbs/good.ipynb": ("ok", None, None)}, rep
    assert "2 notebooks: 1 ok, 1 failed (1 error)" in c.stdout, c
    assert "still running" not in c.stderr
    bad = j.ik("run", "--collect", "nbs", cwd=j.work)
    assert bad.returncode == 2 and "nbs/slurm/job.json: not found" in stderr_line(bad), bad
    # --resume through --slurm: the fixed notebook runs again, the ok one is
    # taken from the earlier records, and the report has both.
    good_out = j.work / "out" / "nbs" / "good.ipynb"
    good_mtime = good_out.stat().st_mtime_ns
    j.write(d / "bad.ipynb", nb_text(["print('fixed')"]))
    r = j.ik("run", "--slurm", "--resume", "--kernel", KERNEL, "-o", "out", "nbs", env=slurm_env(slurm),
             cwd=j.work, timeout=300)
    assert r.returncode == 0, r
    rep = read_report(j.work / "out" / "report.jsonl")
    assert {k: (v["status"], v["resumed"]) for k, v in rep.items()} == \
        {"nbs/bad.ipynb": ("ok", False), "nbs/good.ipynb": ("ok", True)}, rep
    assert "2 notebooks: 2 ok" in r.stdout, r
    task_log = (j.work / "out" / "slurm" / "task-0.log").read_text()
    assert "start    nbs/bad.ipynb" in task_log and "start    nbs/good.ipynb" not in task_log, task_log
    assert good_out.stat().st_mtime_ns == good_mtime
    assert outputs(j.work / "out" / "nbs" / "bad.ipynb")[0][1][0]["text"] == "fixed\n"
    job_gone(slurm, j.work / "out")


def start_slurm_loops(slurm, j) -> subprocess.Popen:
    """`run --slurm` of three endless notebooks, returned once two array
    tasks' kernels run (two tasks fit on the node's 2 CPUs)."""
    d = j.mkdir(j.work / "loops")
    for i in range(3):
        j.write(d / f"l{i}.ipynb", nb_text(["import time\nwhile True:\n    time.sleep(0.05)"]))
    p = subprocess.Popen(j.argv([j.tools.ik, "run", "--slurm", "--tasks", "3", "-j", "1", "--kernel", KERNEL,
                                 "loops"]),
                         cwd=j.work, env=j.env(slurm_env(slurm)), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len([x for x in processes_matching([str(j.tools.launcher)]) if str(j.base) in x[1]]) < 2:
            assert time.monotonic() < deadline and p.poll() is None, "kernels did not start"
            time.sleep(0.2)
        time.sleep(2)
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return p


def stop_slurm_loops(p: subprocess.Popen, sig: int) -> tuple[str, str]:
    try:
        os.kill(p.pid, sig)
        return p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()


def test_run_slurm_ctrl_c_cancels_the_job(slurm, runner):
    j = runner
    p = start_slurm_loops(slurm, j)
    out, err = stop_slurm_loops(p, signal.SIGINT)
    assert p.returncode == 130, f"{p.returncode}\n{out}\n{err}"
    assert "cancelling Slurm job" in err, err
    rep = read_report(j.work / "run-output" / "report.jsonl")
    assert [v["status"] for v in rep.values()] == ["interrupted"] * 3, rep
    assert "3 notebooks: 0 ok, 3 failed (3 interrupted)" in out, out + err
    job_gone(slurm, j.work / "run-output")
    assert_no_kernels(j)


def test_run_slurm_sigkill_cancels_the_job(slurm, runner):
    """SIGKILL of the submitter (nothing it can catch): its cancel guard, in
    a session of its own, cancels the job array; no task or kernel goes on."""
    j = runner
    p = start_slurm_loops(slurm, j)
    stop_slurm_loops(p, signal.SIGKILL)
    assert p.returncode == -signal.SIGKILL, p.returncode
    job = json.loads((j.work / "run-output" / "slurm" / "job.json").read_text())["job_id"]
    wait_gone(slurm, job, timeout=60)
    assert f"scancel {job}" in (j.work / "run-output" / "slurm" / "cancel.log").read_text()
    assert_no_kernels(j)


KILL_GUARD_SBATCH = """#!/bin/sh
# Kills the submitter's Slurm cancel guard (its other child, in a session of
# its own) before submitting, as a stray kill or the OOM killer could.
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [ "$pid" = "$$" ] && continue
  # /proc/PID/stat after the command name: state ppid pgrp session ...
  if awk -v parent="$PPID" -v pid="$pid" '{ sub(/^.*\\) /, ""); exit !($2 == parent && $4 == pid) }' \
      "$d/stat" 2>/dev/null; then
    kill -9 "$pid" && echo "$pid" >"${0%/*}/killed-guard"  # (sbatch's stderr is captured)
  fi
done
exec /usr/bin/sbatch "$@"
"""


def test_run_slurm_guard_gone_does_not_kill_the_run(slurm, runner):
    """A cancel guard that died is no reason for the run to die: telling it
    the job id (and, at the end, that all is done) used to raise SIGPIPE in
    the submitter, which then left its job unfollowed (exit -13)."""
    j = runner
    d = j.mkdir(j.work / "nbs")
    j.write(d / "good.ipynb", nb_text(["print('good')"]))
    bindir = j.mkdir(j.base / "kill-guard-bin")
    j.write(bindir / "sbatch", KILL_GUARD_SBATCH, 0o755)
    r = j.ik("run", "--slurm", "--kernel", KERNEL, "-o", "out", "nbs", cwd=j.work, timeout=300,
             env={**slurm_env(slurm), "PATH": f"{bindir}:/usr/bin:/bin"})
    assert r.returncode == 0, r  # was -13
    assert (bindir / "killed-guard").read_text().strip().isdigit()
    assert "1 notebooks: 1 ok" in r.stdout or "1 notebook: 1 ok" in r.stdout, r
    job_gone(slurm, j.work / "out")


def test_run_slurm_usage(slurm, runner):
    j = runner
    d = j.mkdir(j.work / "nbs")
    j.write(d / "a.ipynb", nb_text(["1"]))
    r = j.ik("run", "--tasks", "2", "nbs")
    assert r.returncode == 2 and "need --slurm" in stderr_line(r), r
    r = j.ik("run", "--slurm", "--share", "0/2", "nbs")
    assert r.returncode == 2 and "--share is what --slurm gives" in stderr_line(r), r
    r = j.ik("run", "--slurm", "--kernel", KERNEL, "--slurm-opt=--partition=nope", "nbs", env=slurm_env(slurm))
    assert r.returncode == 125 and "nope" in stderr_line(r) and "sinfo" in stderr_line(r), r
    r = j.ik("run", "--slurm", "--kernel", KERNEL, "-j", "2", "--memory", "1G", "--slurm-opt=--mem=1G", "nbs")
    assert r.returncode == 2 and "--slurm-opt=--mem=1024M is less than" in stderr_line(r), r
    r = j.ik("run", "--slurm", "--dry-run", "--tasks", "1", "--memory", "512M", "--notebook-timeout", "2m", "nbs")
    assert r.returncode == 0, r
    plan = json.loads(r.stdout)["slurm"]
    assert plan["tasks"] == 1 and plan["task_memory"] == "1280M" and plan["time_minutes"] == 8, plan
    assert "--dry-run" not in plan["script"] and "--share \"${SLURM_ARRAY_TASK_ID}/1\" -j 1" in plan["script"], plan
    assert not (j.work / "run-output").exists()
