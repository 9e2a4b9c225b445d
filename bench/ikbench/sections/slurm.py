"""9. Slurm (issue 13): the batch section's small notebooks through
`isolated-kernel run --slurm` on a one-node Slurm cluster, against the same
notebooks through a local `isolated-kernel run -j J`: the results must be
identical (every notebook's status and its executed cells, normalised as
tests/integration/test_run.py does), and the submission-to-summary time of
`run --slurm` (sbatch, queueing, the array tasks, following their results,
the table) is reported next to the local run's wall time.

The cluster: the one of $SLURM_CONF when it is set (e.g. started with
`scripts/slurm-local start`, jobs run as whoever runs bench/run), else, as
root, one started for this section in a directory of its own with
tests/kit/slurm.py (what the tests and scripts/slurm-local use; jobs
submitted as root) and stopped at the end, its jobs cancelled first. Without
Slurm's programs, or neither root nor $SLURM_CONF, the section records why
it was skipped and measures nothing.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tempfile
from pathlib import Path

from ..common import REPO
from ..procfs import loadavg
from ..registry import Count, Section, Step, register
from ..report import f
from ..rounds import interleaved
from ..stats import med
from .batch import SPEC, install_and_make_notebooks, run_timed


def _kit():
    """tests/kit/slurm.py, loaded by path (the tests' `kit` package is not
    on bench's import path)."""
    spec = importlib.util.spec_from_file_location("ik_kit_slurm", REPO / "tests" / "kit" / "slurm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def normalized(path: Path):
    """The executed notebook's code cells: source, execution count, outputs
    (what test_run.py's comparison with nbconvert keeps)."""
    nb = json.loads(path.read_text())
    return [(c["source"], c.get("execution_count"), c.get("outputs"))
            for c in nb["cells"] if c["cell_type"] == "code"]


def results_of(out: Path) -> dict:
    recs = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines() if line.strip()]
    return {r["notebook"]: r for r in recs}


def compare(local: Path, cluster: Path) -> list[str]:
    """Differences between two runs' results; [] when identical."""
    a, b = results_of(local), results_of(cluster)
    diffs = []
    if set(a) != set(b):
        diffs.append(f"notebooks differ: only local {sorted(set(a) - set(b))[:3]}, "
                     f"only --slurm {sorted(set(b) - set(a))[:3]}")
    for name in sorted(set(a) & set(b)):
        if (a[name]["status"], a[name].get("cell")) != (b[name]["status"], b[name].get("cell")):
            diffs.append(f"{name}: local {a[name]['status']}, --slurm {b[name]['status']}")
        elif a[name]["status"] == "ok" and normalized(Path(a[name]["output"])) != normalized(Path(b[name]["output"])):
            diffs.append(f"{name}: the executed notebooks differ")
    return diffs


class Cluster:
    """The cluster to submit to: $SLURM_CONF's, or one of our own (as root)."""

    def __init__(self, bench):
        self.own = None
        self.conf = os.environ.get("SLURM_CONF", "")
        self.skip = ""
        kit = _kit()
        if missing := kit.missing_programs():
            self.skip = f"Slurm not installed (missing {' '.join(missing)}: apt-get install {kit.PACKAGES})"
        elif self.conf and Path(self.conf).is_file():
            self.where = f"the cluster of SLURM_CONF={self.conf}"
        elif os.geteuid() != 0:
            self.skip = ("no cluster: as root bench/run starts a one-node cluster; else start one "
                         "(scripts/slurm-local start) and export its SLURM_CONF")
        else:
            self.own = kit.SlurmCluster(Path(tempfile.mkdtemp(prefix="ik-slurm-bench-", dir="/tmp")))
            bench.log(f"  starting a one-node Slurm cluster in {self.own.base}")
            try:
                self.own.start()
            except kit.ClusterError as e:
                self.own.remove()
                self.own = None
                self.skip = f"the one-node cluster did not start: {e}"
                return
            self.conf = str(self.own.conf)
            self.where = f"a one-node cluster started for this section ({self.own.cpus} CPUs, jobs as root)"

    def env(self, base: dict) -> dict:
        return {**base, "SLURM_CONF": self.conf}

    def cancel(self, out: Path) -> None:
        """Cancels the run's job if it is still queued (the submitter failed)."""
        try:
            job = json.loads((out / "slurm" / "job.json").read_text())["job_id"]
        except (OSError, ValueError, KeyError):
            return
        subprocess.run(["scancel", job], env=self.env(os.environ.copy()), capture_output=True, timeout=30)

    def close(self) -> list[str]:
        if self.own is None:
            return []
        forced = self.own.stop()
        self.own.remove()
        return forced


def run(bench):
    n, rounds = bench.args.slurm_notebooks, bench.args.slurm_rounds
    jobs, tasks, task_slots = bench.args.slurm_local_jobs, bench.args.slurm_tasks, bench.args.slurm_task_jobs
    bench.log(f"9. slurm: {n} notebooks, `run --slurm --tasks {tasks} -j {task_slots}` vs `run -j {jobs}`, "
              f"{rounds} round(s)")
    cluster = Cluster(bench)
    if cluster.skip:
        bench.log(f"  skipped: {cluster.skip}")
        bench.results["slurm"] = {"skipped": cluster.skip}
        return
    ik = str(bench.env.bin / "isolated-kernel")
    tmp = Path(tempfile.mkdtemp(prefix="slurm-", dir=bench.env.tmp))
    env = os.environ.copy()
    forced, outs = [], []
    try:
        nbs = install_and_make_notebooks(bench, ik, env, tmp, n)
        la0 = loadavg()
        diffs = []

        def one(side, rnd):
            out = tmp / f"out-{side}-{rnd}"
            outs.append(out)
            cmd = [ik, "run", "--kernel", SPEC, "-o", str(out)]
            cmd += ["-j", str(jobs)] if side == "local" else \
                ["--slurm", "--tasks", str(tasks), "-j", str(task_slots)]
            w, _, _ = run_timed([cmd + [str(nbs)]], cluster.env(env) if side == "slurm" else env, tmp)
            bench.log(f"  round {rnd + 1}/{rounds}, {side}: {w:.1f} s "
                      f"{'submission to summary' if side == 'slurm' else 'wall'}")
            bad = [k for k, v in results_of(out).items() if v["status"] != "ok"]
            if bad:
                raise RuntimeError(f"isolated-kernel run ({side}): not ok: {bad[:3]}; see {out}")
            return w

        def compare_round(done, _):
            diffs.extend(compare(tmp / f"out-local-{done - 1}", tmp / f"out-slurm-{done - 1}"))
        wall = interleaved(bench, ("local", "slurm"), rounds, one, after_round=compare_round)
    finally:
        for o in outs:
            cluster.cancel(o)
        forced = cluster.close()
    if forced:
        raise RuntimeError(f"had to kill {forced} when stopping the Slurm cluster")
    bench.results["slurm"] = {
        "notebooks": n, "rounds": rounds, "local_jobs": jobs, "tasks": tasks, "task_jobs": task_slots,
        "cluster": cluster.where, "load_before": la0, "load_after": loadavg(),
        "local_wall_s": wall["local"], "slurm_submission_to_summary_s": wall["slurm"],
        "identical": not diffs, "differences": diffs[:10],
    }


def targets(res):
    s = res.get("slurm")
    if not s:
        return []
    name = (f"the same {s.get('notebooks', 40)} notebooks through `--slurm` on the one-node cluster: results "
            "identical to the local run; submission-to-summary time reported")
    if "skipped" in s:
        return [(name, f"not measured: {s['skipped']}", False)]
    val = (f"{'identical' if s['identical'] else 'DIFFERENT: ' + '; '.join(s['differences'][:2])}; "
           f"{f(med(s['slurm_submission_to_summary_s']))} s (local `run -j {s['local_jobs']}`: "
           f"{f(med(s['local_wall_s']))} s)")
    return [(name, val, s["identical"])]


def render(res):
    s = res.get("slurm")
    if not s:
        return []
    L = []
    w = L.append
    if "skipped" in s:
        w("### 9. Slurm: `isolated-kernel run --slurm`")
        w("")
        w(f"Not measured: {s['skipped']}.")
        w("")
        return L
    w(f"### 9. Slurm: {s['notebooks']} notebooks through `isolated-kernel run --slurm` vs a local "
      f"`isolated-kernel run -j {s['local_jobs']}` ({s['rounds']} round(s), in shuffled order; "
      f"load {s['load_before'][0]:.1f}→{s['load_after'][0]:.1f})")
    w("")
    w(f"The batch section's notebooks, the isolated kernelspec; the cluster: {s['cluster']}. `--slurm`: one job "
      f"array of {s['tasks']} tasks of {s['task_jobs']} slot(s) each. Submission to summary: from starting "
      "`run --slurm` to its table (sbatch, queueing, the tasks, following their results).")
    w("")
    w("| | median s | each round s |")
    w("|---|---|---|")
    w(f"| local `run -j {s['local_jobs']}`, wall | {f(med(s['local_wall_s']))} | "
      f"{', '.join(f(x) for x in s['local_wall_s'])} |")
    w(f"| `run --slurm --tasks {s['tasks']} -j {s['task_jobs']}`, submission to summary | "
      f"{f(med(s['slurm_submission_to_summary_s']))} | "
      f"{', '.join(f(x) for x in s['slurm_submission_to_summary_s'])} |")
    w("")
    w("Results: " + ("identical (every notebook's status and executed cells: source, execution count, outputs)."
                     if s["identical"] else "**different**: " + "; ".join(s["differences"])))
    w("")
    return L


register(Section(
    name="slurm", order=95, steps=(Step(95, run),),
    counts=(Count("--slurm-notebooks", full=40, quick=4, help="slurm: notebooks (default 40)"),
            Count("--slurm-local-jobs", default=2, help="slurm: -j of the local run (default 2)"),
            Count("--slurm-tasks", default=2, help="slurm: array tasks of run --slurm (default 2)"),
            Count("--slurm-task-jobs", default=1, help="slurm: -j of each array task (default 1)"),
            Count("--slurm-rounds", full=1, quick=1, help="slurm: rounds of the two sides (default 1)")),
    render=render, targets=targets))
