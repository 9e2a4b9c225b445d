"""8. Batch (issue 13): small notebooks through `isolated-kernel run -j J`
with the isolated kernel, against a sequential loop of `jupyter nbconvert
--execute --to notebook` with the plain python3 kernel; wall and CPU of the
whole process tree, and per notebook the overhead of `run` itself.

The isolated kernelspec is installed with `isolated-kernel install --user`
into the run's private JUPYTER_DATA_DIR. With more than one round the two
sides alternate (shuffled order every round).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ..common import PYTHON
from ..procfs import loadavg
from ..registry import Count, Section, Step, register
from ..report import f, fr
from ..rounds import interleaved
from ..stats import med, paired_ratio_ci

CELLS = [
    "import math\nx = sum(math.sqrt(i) for i in range(10000))",
    "print(f'{x:.3f}')",
    "{'answer': 6 * 7}",
]
SPEC = "python3-isolated"
PHASES = ("startup", "kernel_start", "execute", "shutdown")


def make_notebooks(d: Path, n: int, kernel="python3") -> None:
    """n notebooks of three small cells each (nb000.ipynb ...)."""
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
              "source": src} for i, src in enumerate(CELLS)]
    for i in range(n):
        nb = {"cells": cells, "metadata": {"kernelspec": {"name": kernel, "display_name": kernel,
                                                          "language": "python"}},
              "nbformat": 4, "nbformat_minor": 5}
        (d / f"nb{i:03d}.ipynb").write_text(json.dumps(nb))


def run_timed(cmds, env, cwd):
    """Runs the commands one after the other: (wall s, CPU s of the whole
    process tree (the children's rusage), [wall s of each command]). A
    failing command ends the run with its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    each = []
    t0 = time.monotonic()
    for cmd in cmds:
        t = time.monotonic()
        p = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        each.append(time.monotonic() - t)
        if p.returncode != 0:
            raise RuntimeError(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, each


def _copy_worker(env):
    """run's worker script where the copied isolated-kernel looks first
    (<bin>/../share/isolated-kernel/), taken from the build's source tree,
    else the installed one; without either, run finds its own."""
    for src in (env.build_dir.parent / "share" / "run" / "ik_run_notebook.py",
                Path("/usr/share/isolated-kernel/ik_run_notebook.py")):
        if src.is_file():
            dest = env.bin.parent / "share" / "isolated-kernel"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / "ik_run_notebook.py")
            return


def install_and_make_notebooks(bench, ik, env, tmp: Path, n: int) -> Path:
    """The worker next to the programs, the isolated kernelspec installed
    for the user, and N small notebooks in TMP/nbs (shared with slurm)."""
    _copy_worker(bench.env)
    r = subprocess.run([ik, "install", "--user", "--no-check", "--replace"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"isolated-kernel install failed:\n{r.stdout}")
    nbs = tmp / "nbs"
    nbs.mkdir()
    make_notebooks(nbs, n)
    return nbs


def run(bench):
    n, jobs, rounds = bench.args.batch_notebooks, bench.args.batch_jobs, bench.args.batch_rounds
    ik = str(bench.env.bin / "isolated-kernel")
    bench.log(f"8. batch: {n} notebooks, `isolated-kernel run -j {jobs}` vs an nbconvert loop, {rounds} round(s)")
    tmp = Path(tempfile.mkdtemp(prefix="batch-", dir=bench.env.tmp))
    env = os.environ.copy()  # the run's private JUPYTER_* (see Env)
    nbs = install_and_make_notebooks(bench, ik, env, tmp, n)
    la0 = loadavg()
    overhead, orchestrator, phases = [], [], []

    def one(side, rnd):
        nonlocal overhead
        out = tmp / f"out-{side}-{rnd}"
        if side == "loop":
            cmds = [[PYTHON, "-m", "nbconvert", "--execute", "--to", "notebook",
                     "--ExecutePreprocessor.kernel_name=python3", "--output-dir", str(out), str(nb)]
                    for nb in sorted(nbs.glob("*.ipynb"))]
        else:
            cmds = [[ik, "run", "-j", str(jobs), "--kernel", SPEC, "-o", str(out), str(nbs)]]
        w, c, _ = run_timed(cmds, env, tmp)
        bench.log(f"  round {rnd + 1}/{rounds}, {side}: {w:.1f} s wall, {c:.1f} s CPU")
        if side == "run":
            recs = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]
            bad = [rec for rec in recs if rec["status"] != "ok"]
            if bad:
                raise RuntimeError(f"isolated-kernel run: not ok: {bad[:3]}")
            # the worker's time beyond its kernel's start and the notebook's execution
            overhead += [rec["seconds"] - rec["timing"]["kernel_start"] - rec["timing"]["execute"]
                         for rec in recs]
            # wall time not spent inside any worker, per notebook
            busy = sum(rec["seconds"] for rec in recs) / jobs
            orchestrator.append(max(0.0, w - busy) / len(recs))
            phases.append({k: statistics.mean(rec["timing"][k] for rec in recs) for k in PHASES})
        return w, c
    got = interleaved(bench, ("loop", "run"), rounds, one)
    wall = {side: [w for w, _ in got[side]] for side in got}
    cpu = {side: [c for _, c in got[side]] for side in got}
    bench.results["batch"] = {
        "notebooks": n, "jobs": jobs, "rounds": rounds, "load_before": la0, "load_after": loadavg(),
        "variants": {"nbconvert_loop_plain": {"wall_s": wall["loop"], "cpu_s": cpu["loop"]},
                     "run_isolated": {"wall_s": wall["run"], "cpu_s": cpu["run"]}},
        "ratio_wall": paired_ratio_ci(wall["run"], wall["loop"]),
        "ratio_cpu": paired_ratio_ci(cpu["run"], cpu["loop"]),
        "run_overhead_per_notebook_s": {
            "worker_beyond_kernel_start_and_execution_mean": statistics.mean(overhead) if overhead else None,
            "orchestrator_wall_share_mean": statistics.mean(orchestrator) if orchestrator else None},
        "worker_phases_mean_s": phases,
    }


def targets(res):
    s = res.get("batch")
    if not s:
        return []
    r = s["ratio_wall"]
    o = s["run_overhead_per_notebook_s"]
    vals = [o["worker_beyond_kernel_start_and_execution_mean"], o["orchestrator_wall_share_mean"]]
    return [("40 small notebooks: `isolated-kernel run -j 2` wall ≤ 0.35× a sequential `jupyter nbconvert "
             "--execute` loop with a plain kernel", f"{fr(r)} ({s['notebooks']} notebooks, -j {s['jobs']})",
             r["ratio"] <= 0.35),
            ("overhead of `run` per notebook (beyond the kernels' start and execution): reported",
             f"{f(vals[0], 2)} s worker, {f(vals[1], 3)} s orchestrator", all(v is not None for v in vals))]


def render(res):
    s = res.get("batch")
    if not s:
        return []
    L = []
    w = L.append
    w(f"### 8. Batch: {s['notebooks']} notebooks, `isolated-kernel run -j {s['jobs']}` vs an nbconvert loop "
      f"({s['rounds']} round(s), in shuffled order; load {s['load_before'][0]:.1f}→{s['load_after'][0]:.1f})")
    w("")
    w("Each notebook: three small cells. Loop: one `jupyter nbconvert --execute --to notebook` per notebook, "
      "one after the other, the plain `python3` kernel. `run`: the isolated kernelspec (`isolated-kernel "
      "install`). CPU: user+system of the whole process tree.")
    w("")
    w("| | wall median s | CPU median s | wall ratio to the loop | CPU ratio |")
    w("|---|---|---|---|---|")
    names = {"nbconvert_loop_plain": "`nbconvert --execute` loop, plain kernel",
             "run_isolated": f"`isolated-kernel run -j {s['jobs']}`, isolated kernel"}
    for v, d in s["variants"].items():
        loop = v == "nbconvert_loop_plain"
        w(f"| {names.get(v, v)} | {f(med(d['wall_s']))} | {f(med(d['cpu_s']))} | "
          f"{'1' if loop else fr(s['ratio_wall'])} | {'1' if loop else fr(s['ratio_cpu'])} |")
    w("")
    o = s["run_overhead_per_notebook_s"]
    ph = s["worker_phases_mean_s"]
    w(f"`run`'s own overhead per notebook: {f(o['worker_beyond_kernel_start_and_execution_mean'], 2)} s of worker "
      "time beyond the kernel's start and the notebook's execution (Python start-up and imports, shutdown, "
      f"writing), and {f(o['orchestrator_wall_share_mean'], 3)} s of the orchestrator's wall time"
      + (". Worker phases, mean s per notebook (last round): "
         + ", ".join(f"{k} {f(ph[-1][k], 2)}" for k in PHASES) if ph else "") + ".")
    w("")
    return L


register(Section(
    name="batch", order=90, steps=(Step(90, run),),
    counts=(Count("--batch-notebooks", full=40, quick=4, help="batch: notebooks (default 40)"),
            Count("--batch-jobs", default=2, help="batch: run -j (default 2)"),
            Count("--batch-rounds", full=1, quick=1, help="batch: rounds of the two sides (default 1)")),
    render=render, targets=targets))
