"""1b. Issue 10's pair: `isolate -- /bin/true` vs bubblewrap's minimal line,
from an empty directory; wall time and the CPU of the whole process tree."""
from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import time

from ..procfs import loadavg
from ..registry import Count, Section, Step, register
from ..report import f, fr
from ..rounds import interleaved
from ..stats import paired_ratio_ci, summary

# Issue 10's reference line, exactly: bubblewrap's minimal sandbox.
TREE_BWRAP = ["bwrap", "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64",
              "/lib64", "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
              "--unshare-all", "--die-with-parent", "/bin/true"]
PR_SET_CHILD_SUBREAPER = 36


class Subreaper:
    """While active, orphaned descendants (bubblewrap's sandbox init, which
    its parent never waits for) are re-parented to us and reaped by us, so
    getrusage(RUSAGE_CHILDREN) counts every process of the tree."""

    def __enter__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        if self.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        return self

    def __exit__(self, *exc):
        self.libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        return False


def reap_all():
    """Waits for every child we have (direct or re-parented) to exit."""
    while True:
        try:
            os.wait4(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def tree_cpu_ms(ru0, ru1):
    return ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) * 1e3


def run(bench):
    """`isolate -- /bin/true` against TREE_BWRAP, both started from an
    empty directory (isolate's default `.` mount binds it), in pairs of
    shuffled order. CPU is user+system of the whole process tree: the
    RUSAGE_CHILDREN delta across one run, with us as child subreaper so
    that orphans are reaped (and so counted) here too."""
    n = bench.args.tree_pairs
    empty = bench.env.tmp / "empty"
    empty.mkdir(exist_ok=True)
    cmds = {"isolate": [bench.env.isolate, "--", "/bin/true"], "bwrap": TREE_BWRAP}
    reap_all()  # nothing of ours may be left to blur the deltas
    bench.log(f"1b. set-up, whole tree: {len(cmds)} variants x {n} pairs from an empty directory "
              "(+5 warm-up pairs)")
    la0 = loadavg()
    with Subreaper():
        for name, argv in cmds.items():
            rc, _, _ = _tree_run(argv, empty)
            if rc != 0:
                sys.exit(f"bench/run: {name} failed (exit {rc}): {' '.join(argv)}")
        def wall_cpu(name, r):
            rc, w, c = _tree_run(cmds[name], empty)
            if rc != 0:
                bench.log(f"  {name} exited {rc}")
            return w, c
        got = interleaved(bench, cmds, n, wall_cpu, warmup=5)
    wall = {k: [w for w, _ in got[k]] for k in cmds}
    cpu = {k: [c for _, c in got[k]] for k in cmds}
    res = {"pairs": n, "cwd": "an empty directory", "load_before": la0, "load_after": loadavg(),
           "variants": {k: {"argv": cmds[k], "wall_ms": summary(wall[k]), "cpu_ms": summary(cpu[k]),
                            "wall_samples": wall[k], "cpu_samples": cpu[k]} for k in cmds},
           "wall_ratio": paired_ratio_ci(wall["isolate"], wall["bwrap"]),
           "cpu_ratio": paired_ratio_ci(cpu["isolate"], cpu["bwrap"])}
    bench.results["setup_tree"] = res


def _tree_run(argv, cwd):
    """(exit status, wall ms until the direct child exits, CPU ms of the whole tree)."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    _, status, _ = os.wait4(p.pid, 0)
    t1 = time.perf_counter()
    p.returncode = os.waitstatus_to_exitcode(status)
    reap_all()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return p.returncode, (t1 - t0) * 1e3, tree_cpu_ms(ru0, ru1)


def targets(res):
    s = res.get("setup_tree")
    if not s:
        return []
    w, c = s["wall_ratio"], s["cpu_ratio"]
    return [("issue 10's pair from an empty directory: wall and whole-tree CPU ≤ 1.0× bubblewrap's",
             f"wall {fr(w)}, CPU {fr(c)}", w["ratio"] <= 1.0 and c["ratio"] <= 1.0)]


def render(res):
    s = res.get("setup_tree")
    if not s:
        return []
    L = []
    w = L.append
    w(f"### 1b. Set-up, whole process tree: `isolate -- /bin/true` vs bubblewrap's minimal line "
      f"({s['pairs']} pairs from {s['cwd']}, interleaved; load {s['load_before'][0]:.1f}→"
      f"{s['load_after'][0]:.1f})")
    w("")
    w("CPU is user+system of every process of the tree (the bench is the children's subreaper, so "
      "bubblewrap's sandbox init, which its parent does not wait for, is counted too).")
    w("")
    w("| variant | wall median ms | wall p10–p90 | wall min–max | CPU median ms | CPU p10–p90 | CPU min–max |")
    w("|---|---|---|---|---|---|---|")
    for v, d in s["variants"].items():
        ws, cs = d["wall_ms"], d["cpu_ms"]
        w(f"| {v} | {f(ws['median'], 2)} | {f(ws['p10'], 2)}–{f(ws['p90'], 2)} | {f(ws['min'], 2)}–"
          f"{f(ws['max'], 2)} | {f(cs['median'], 2)} | {f(cs['p10'], 2)}–{f(cs['p90'], 2)} | "
          f"{f(cs['min'], 2)}–{f(cs['max'], 2)} |")
    w("")
    w(f"isolate / bubblewrap, medians of the per-pair ratios: wall {fr(s['wall_ratio'])}, "
      f"CPU {fr(s['cpu_ratio'])}. bubblewrap: `{' '.join(TREE_BWRAP)}`.")
    w("")
    return L


register(Section(
    name="setup-tree", order=20, steps=(Step(20, run),),
    counts=(Count("--tree-pairs", full=250, quick=10, help="pairs of the setup-tree section (default 250)"),),
    render=render, targets=targets))
