"""isolated-kernel on a real one-node Slurm cluster (Debian's slurmctld,
slurmd and munge), configured in a temporary directory, started before the
first test of this file and stopped after the last (slurm_cluster.py). Jobs
are submitted as root and as the unprivileged user iktest (the `jup`
fixture). The cluster's second node, ik-nouserns (partition `nouserns`), is
a real node on which user namespaces are disabled: its slurmd runs in a user
namespace whose user.max_user_namespaces is 0 (see slurm_cluster.py)."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import pytest

from ikcli import jup, tools  # noqa: F401  (fixtures)
from slurm_cluster import NOUSERNS_NODE, NODE, ClusterError, SlurmCluster, missing_programs, PACKAGES


@pytest.fixture(scope="session")
def slurm():
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster's daemons must be started as root")
    if missing := missing_programs():
        pytest.fail(f"missing {' '.join(missing)}: run scripts/install-deps "
                    f"(apt-get install --no-install-recommends {PACKAGES})")
    c = SlurmCluster(Path(tempfile.mkdtemp(prefix="ik-slurm-", dir="/tmp")), nouserns_node=True)
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
