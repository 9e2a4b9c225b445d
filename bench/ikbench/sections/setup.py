"""1. Sandbox set-up: `isolate true` vs bubblewrap (also given isolate's own
mounts) vs unshare, wall time interleaved and CPU under perf stat; with
diagnostic variants (no seccomp, shared network, 40 extra binds)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..env import root_symlinks
from ..procfs import loadavg
from ..registry import Count, Section, Step, register
from ..report import f, fr
from ..rounds import interleaved
from ..stats import med, paired_ratio_ci, ratio_ci, summary


def setup_commands(env):
    """name -> (argv, fds-to-open) for measurement 1."""
    ns = ["--unshare-all", "--die-with-parent"]
    bwrap = ["bwrap", "--ro-bind", "/usr", "/usr", *root_symlinks(), "--proc", "/proc", "--dev", "/dev",
             "--tmpfs", "/tmp", *ns, "--", "true"]
    unshare = ["unshare", "--user", "--map-root-user" if os.getuid() == 0 else "--map-current-user",
               "--mount", "--pid", "--fork", "--ipc", "--uts", "--net", "--cgroup", "--kill-child", "--", "true"]
    cmds = {
        "isolate": ([env.isolate, "true"], []),
        "bwrap": (bwrap, []),
        "bwrap-same-view": bwrap_same_view(env),
        "unshare": (unshare, []),
    }
    # Diagnostics: what the seccomp filter and the network namespace cost,
    # and the marginal cost of a bind mount (40 extra read-only binds).
    srcs = [p for p in sorted(Path("/usr/share").iterdir()) if p.is_dir() and not p.is_symlink()][:40]
    extra = " ".join(f"ro:/mnt/b{i}={p}" for i, p in enumerate(srcs))
    binds = [a for i, p in enumerate(srcs) for a in ("--ro-bind", str(p), f"/mnt/b{i}")]
    diag = {
        "isolate --seccomp off": ([env.isolate, "--seccomp", "off", "true"], []),
        "isolate --share-net": ([env.isolate, "--share-net", "true"], []),
        f"isolate +{len(srcs)} binds": ([env.isolate, "-m", ". " + extra, "true"], []),
        f"bwrap +{len(srcs)} binds": (bwrap[:bwrap.index("--unshare-all")] + binds + ns + ["--", "true"], []),
    }
    return cmds, diag


def bwrap_same_view(env):
    """bubblewrap given isolate's own plan (every mount of --print-plan)."""
    plan = json.loads(subprocess.run([env.isolate, "--print-plan", "true"], cwd=env.work, check=True,
                                     capture_output=True, text=True).stdout)
    argv = ["bwrap"]
    files = []
    size = str(plan.get("tmpfs_size", 1 << 30))
    for m in plan["mounts"]:
        op, dest = m["op"], m["dest"]
        if op == "tmpfs":
            if dest == "/":
                continue  # bubblewrap's root is a tmpfs already
            argv += ["--size", size, "--tmpfs", dest]
        elif op == "bind":
            argv += ["--ro-bind" if m.get("access") == "ro" else "--bind", m["src"], dest]
        elif op == "symlink":
            argv += ["--symlink", m["target"], dest]
        elif op == "dir":
            argv += ["--dir", dest]
        elif op == "proc":
            argv += ["--proc", dest]
        elif op == "dev":
            argv += ["--dev", dest]
        elif op == "file":
            p = env.tmp / f"file{len(files)}"
            p.write_bytes(b"x" * int(m.get("bytes", 1)))
            files.append((p, dest))
            # isolate writes it into its root tmpfs ("how": "write") or binds it
            argv += ["--file" if m.get("how") == "write" else "--ro-bind-data", "{fd%d}" % (len(files) - 1),
                     dest]
        else:
            raise SystemExit(f"bench/run: unknown plan op {op}")
    argv += ["--remount-ro", "/"]  # isolate's root tmpfs is read-only once built
    argv += ["--unshare-all", "--die-with-parent", "--new-session", "--hostname", plan.get("hostname", "isolated"),
             "--cap-drop", "ALL", "--chdir", plan["cwd"], "--", "true"]
    return argv, files


def run(bench):
    n = bench.args.setup_runs
    main, diag = setup_commands(bench.env)
    cmds = {**main, **diag}
    for name, (argv, files) in cmds.items():  # each must work before timing it
        rc, _, _ = _spawn(bench, argv, files, check_output=True)
        if rc != 0:
            sys.exit(f"bench/run: set-up variant {name} failed (exit {rc}): {' '.join(argv)}")
    cpu = {k: [] for k in cmds}
    bench.log(f"1. set-up: {len(cmds)} variants x {n} runs, interleaved (+5 warm-up rounds)")
    la0 = loadavg()

    def wall_ms(name, r):
        rc, w, _ = _spawn(bench, *cmds[name])
        if rc != 0:
            bench.log(f"  {name} exited {rc}")
        return w * 1e3
    wall = interleaved(bench, cmds, n, wall_ms, warmup=5)
    # CPU: rusage misses bubblewrap's sandbox init (never waited for), so
    # count with perf stat, which follows every descendant.
    if shutil.which("perf") and bench.args.setup_cpu_runs:
        m = bench.args.setup_cpu_runs
        bench.log(f"   CPU: {m} interleaved runs each under perf stat -e task-clock")
        got = interleaved(bench, cmds, m, lambda name, r: _perf_task_clock(bench, *cmds[name]))
        cpu = {k: [c for c in got[k] if c is not None] for k in cmds}
    res = {"runs": n, "load_before": la0, "load_after": loadavg(), "variants": {},
           "diagnostics": list(diag)}
    for name in cmds:
        res["variants"][name] = {"argv": cmds[name][0], "wall_ms": summary(wall[name]),
                                 "cpu_ms": summary(cpu[name]), "wall_samples": wall[name],
                                 "cpu_samples": cpu[name]}
    res["ratio_isolate_bwrap"] = paired_ratio_ci(wall["isolate"], wall["bwrap"])
    res["ratio_isolate_bwrap_same_view"] = paired_ratio_ci(wall["isolate"], wall["bwrap-same-view"])
    res["ratio_isolate_unshare"] = paired_ratio_ci(wall["isolate"], wall["unshare"])
    res["cpu_ratio_isolate_bwrap"] = ratio_ci(cpu["isolate"], cpu["bwrap"]) if cpu["isolate"] else None
    ib, bb = next(k for k in diag if k.startswith("isolate +")), next(k for k in diag if k.startswith("bwrap +"))
    nb = int(ib.split("+")[1].split()[0])
    res["per_bind_ms"] = {
        "isolate": (med(wall[ib]) - med(wall["isolate"])) / nb,
        "bwrap": (med(wall[bb]) - med(wall["bwrap"])) / nb,
    }
    bench.results["setup"] = res


def _perf_task_clock(bench, argv, files):
    fds = [os.open(p, os.O_RDONLY) for p, _ in files]
    argv = [a.format(**{f"fd{i}": fd for i, fd in enumerate(fds)}) if a.startswith("{fd") else a for a in argv]
    r = subprocess.run(["perf", "stat", "-x,", "-e", "task-clock", "--", *argv], cwd=bench.env.work,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       pass_fds=fds)
    for fd in fds:
        os.close(fd)
    for line in r.stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2].startswith("task-clock"):
            try:
                return float(parts[0])  # msec
            except ValueError:
                return None
    return None


def _spawn(bench, argv, files, check_output=False):
    fds = [os.open(p, os.O_RDONLY) for p, _ in files]
    argv = [a.format(**{f"fd{i}": fd for i, fd in enumerate(fds)}) if a.startswith("{fd") else a for a in argv]
    out = subprocess.PIPE if check_output else subprocess.DEVNULL
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=bench.env.work, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                         pass_fds=fds)
    _, status, ru = os.wait4(p.pid, 0)
    t1 = time.perf_counter()
    p.returncode = os.waitstatus_to_exitcode(status)
    if check_output and p.returncode != 0:
        sys.stderr.write(p.stderr.read().decode(errors="replace"))
    for fd in fds:
        os.close(fd)
    return p.returncode, t1 - t0, ru.ru_utime + ru.ru_stime


def targets(res):
    s = res.get("setup")
    if not s:
        return []
    r = s["ratio_isolate_bwrap"]
    return [("set-up no slower than bubblewrap (isolate/bwrap ≤ 1.0)",
             f"{fr(r)} (same view: {fr(s['ratio_isolate_bwrap_same_view'])})", r["ratio"] <= 1.0)]


def render(res):
    s = res.get("setup")
    if not s:
        return []
    L = []
    w = L.append
    w(f"### 1. Sandbox set-up: `PROG true` ({s['runs']} runs each, interleaved; load "
      f"{s['load_before'][0]:.1f}→{s['load_after'][0]:.1f})")
    w("")
    w("| variant | wall median ms | p25–p75 ms | CPU median ms (perf stat) | wall ratio isolate / variant |")
    w("|---|---|---|---|---|")
    iso = s["variants"]["isolate"]["wall_samples"]
    for v, d in s["variants"].items():
        diag = v in s.get("diagnostics", [])
        r = "1" if v == "isolate" else ("" if diag else fr(paired_ratio_ci(iso, d["wall_samples"])))
        name = f"*{v}* (diagnostic)" if diag else v
        w(f"| {name} | {f(d['wall_ms']['median'], 2)} | {f(d['wall_ms']['p25'], 2)}–{f(d['wall_ms']['p75'], 2)} "
          f"| {f(d['cpu_ms']['median'], 2)} | {r} |")
    pb = s.get("per_bind_ms")
    if pb:
        w("")
        w(f"Marginal cost of one more read-only bind mount: isolate {pb['isolate']:.3f} ms, bubblewrap "
          f"{pb['bwrap']:.3f} ms (bubblewrap re-reads /proc/self/mountinfo for every mount).")
    w("")
    return L


register(Section(
    name="setup", order=10, steps=(Step(10, run),),
    counts=(Count("--setup-runs", full=100, quick=10),
            Count("--setup-cpu-runs", full=20, quick=3, help="runs per set-up variant under perf stat (default 20)",
                  later=True)),
    render=render, targets=targets))
