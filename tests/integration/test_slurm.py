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
