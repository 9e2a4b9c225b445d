"""7. Warm pool (issue 12): start-to-ready of a pooled isolated kernel vs a
plain cold kernel through KernelManager (to the first kernel_info_reply, the
issue's measure, and in separate starts to jupyter_client's
wait_for_ready(), which adds a >= 0.2 s IOPub flush of its own: both are
reported so that neither hides the other); claim latency in the launcher,
memory of a waiting sandbox, refill CPU; and 7b. small notebooks executed one
after another with `jupyter nbconvert --execute` (what nbgrader does per
submission), pooled isolated vs plain cold kernels.

The pool daemon is this run's own: a private XDG_RUNTIME_DIR (its socket
directory) for the length of the step, stopped in a finally. Kernelspecs:
`ikbench-pooled` (written here: the launcher with -v, so that its claim line
gives the claim latency, metadata pool 1) and, for 7b, `ikbench-pool-nb`
installed with `isolated-kernel install --pool 1` into the run's private
JUPYTER_DATA_DIR, as a user would.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..common import CLK_TCK, PYTHON
from ..procfs import loadavg
from ..registry import Count, Section, Step, register
from ..report import f, fr
from ..stats import med, paired_ratio_ci, summary
from .batch import make_notebooks, run_timed

CLAIM_RE = re.compile(r"claimed a waiting sandbox in ([0-9.]+) ms")
NB_SPEC = "ikbench-pool-nb"


def _ik(bench, *args, check=False):
    """isolated-kernel (the run's copy); the parsed JSON with --json, else the exit status."""
    r = subprocess.run([str(bench.env.bin / "isolated-kernel"), *args], capture_output=True, text=True,
                       timeout=120)
    if check and r.returncode != 0:
        raise RuntimeError(f"isolated-kernel {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    if "--json" in args:
        return json.loads(r.stdout) if r.returncode == 0 else {}
    return r.returncode


def _write_pooled_spec(env):
    """ikbench-pooled: the launcher reads its settings from the kernelspec
    (metadata pool 1 is what makes it claim), -v for the claim line."""
    d = env.jupyter / "kernels" / "ikbench-pooled"
    d.mkdir(parents=True, exist_ok=True)
    argv = [env.launcher, "--kernelspec", "{resource_dir}", "-v", "--", PYTHON, "-m", "ipykernel_launcher",
            "-f", "{connection_file}"]
    (d / "kernel.json").write_text(json.dumps(
        {"argv": argv, "display_name": "ikbench pooled", "language": "python", "interrupt_mode": "signal",
         "metadata": {"isolated_kernel": {"mounts": ["."], "pool": 1}}}, indent=1))
    env.kernel_argv["pooled"] = argv


def _copy_waiter(env):
    """The pool's waiter script where the copied programs look for it
    (<bin>/../share/pool/, as in a build tree), taken from where the
    original build would find it: next to its sources, else installed."""
    for src in (env.build_dir.parent / "share" / "pool" / "pool_waiter.py",
                Path("/usr/share/isolated-kernel/pool_waiter.py")):
        if src.is_file():
            dest = env.bin.parent / "share" / "pool"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / "pool_waiter.py")
            return
    raise RuntimeError(f"pool_waiter.py not found next to {env.build_dir} nor installed (reinstall isolated-kernel)")


def _tree_cpu_s(pids):
    """utime+stime+cutime+cstime of the pids: their own CPU and that of the
    children they reaped (the daemon reaps its helpers)."""
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def _first_kernel_info_reply(kc, km, deadline):
    """Waits for the first kernel_info_reply on shell to a kernel_info_request
    sent right away (re-sent every 0.5 s while none came, as a safety net: the
    client's socket queues the first request until it is connected)."""
    from queue import Empty
    ours = {kc.kernel_info()}
    while True:
        try:
            msg = kc.get_shell_msg(timeout=0.5)
        except Empty:
            if time.perf_counter() > deadline or not km.is_alive():
                raise RuntimeError("no kernel_info_reply")
            ours.add(kc.kernel_info())
            continue
        if msg["msg_type"] == "kernel_info_reply" and msg["parent_header"].get("msg_id") in ours:
            return


def _sched_ns(pid):
    """CPU time of a process so far in ns (/proc/PID/schedstat: ns, where stat has 10 ms ticks), or None."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _start_ready(name, cwd, out, stderr=None, how="kernel_info", on_ready=None):
    """Seconds from KernelManager.start_kernel() to the first
    kernel_info_reply (how="kernel_info": the issue's definition of ready) or
    to the return of jupyter_client's wait_for_ready() (how="wait_for_ready":
    that reply plus jupyter_client's own IOPub wait and 0.2 s flush); the
    kernel's output to out (its stderr to stderr if given)."""
    from jupyter_client.manager import KernelManager
    km = KernelManager(kernel_name=name)
    t0 = time.perf_counter()
    km.start_kernel(cwd=cwd, stdout=out, stderr=stderr or out)
    try:
        kc = km.client()  # a BlockingKernelClient, as nbclient and jupyter console get
        kc.start_channels()
        try:
            if how == "wait_for_ready":
                kc.wait_for_ready(timeout=120)
            else:
                _first_kernel_info_reply(kc, km, t0 + 120)
            took = time.perf_counter() - t0
            if on_ready:
                on_ready(km)
            return took
        finally:
            kc.stop_channels()
    finally:
        km.shutdown_kernel(now=False)


def _pools(bench, spec_part):
    st = _ik(bench, "pool", "status", "--json")
    return st, [p for p in st.get("pools", []) if spec_part in str(p.get("spec", ""))]


def _wait_ready(bench, spec_part, timeout=120, kick=None):
    """The pool status once the pool of spec_part has a ready sandbox. The
    daemon replaces a waiting sandbox killed from outside (a test on the same
    machine), but after three helpers in a row that never got ready it stops
    refilling until the next launch (pool/daemon.cpp fill()), which leaves
    the pool at ready 0, starting 0; then kick() (an untimed start of that
    kernelspec) refills it."""
    deadline = time.monotonic() + timeout
    while True:
        st, pools = _pools(bench, spec_part)
        if sum(p["ready"] for p in pools) >= 1:
            return st, pools
        if kick and pools and not any(p["ready"] or p["starting"] for p in pools):
            bench.log(f"  the pool of {spec_part} lost its waiting sandbox ({pools[0].get('last_error')}): "
                      "an untimed start refills it")
            kick()
            time.sleep(0.5)
            continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"pool of {spec_part} not refilled after {timeout} s: {st}")
        time.sleep(0.1)


MEASURES = ("kernel_info", "wait_for_ready")


def _starts(bench, n, logdir):
    """n rounds of four starts in shuffled order: plain and pooled, each
    timed to the first kernel_info_reply and (a separate start) to
    wait_for_ready(); the pool is refilled (one ready sandbox) before each
    pooled start."""
    work = str(bench.env.work)
    ready = {v: {how: [] for how in MEASURES} for v in ("plain", "pooled")}
    cpu = {"plain": [], "pooled": []}  # CPU ms to the first kernel_info_reply, see _cpu_probe
    claim_ms, fallbacks, pooled_starts = [], 0, 0
    for i in range(n):
        for v, how in bench.shuffled([(v, how) for v in ("plain", "pooled") for how in MEASURES]):
            probe = _CpuProbe() if how == "kernel_info" else None
            if v == "pooled":
                st, pools = _wait_ready(bench, "ikbench-pooled",
                                        kick=lambda: _start_ready("ikbench-pooled", work, bench.kernel_log,
                                                                  bench.kernel_log))
                if probe:
                    probe.before(st, pools)
                log = logdir / f"pooled-{i}-{how}.log"
                with open(log, "w") as err:
                    ready[v][how].append(_start_ready("ikbench-pooled", work, bench.kernel_log, err, how,
                                                      probe and probe.after) * 1e3)
                pooled_starts += 1
                text = log.read_text()
                m = CLAIM_RE.search(text)
                if m:
                    claim_ms.append(float(m.group(1)))
                else:
                    fallbacks += 1
                if probe and m and probe.claimed(text):
                    cpu[v].append(probe.ms)
            else:
                ready[v][how].append(_start_ready("ikbench-plain", work, bench.kernel_log, None, how,
                                                  probe and probe.after) * 1e3)
                if probe and probe.ms is not None:
                    cpu[v].append(probe.ms)
        if (i + 1) % 5 == 0:
            bench.log(f"  round {i + 1}/{n}: median to the first kernel_info_reply plain "
                      f"{med(ready['plain']['kernel_info']):.0f} ms, pooled {med(ready['pooled']['kernel_info']):.0f} ms"
                      f"; to wait_for_ready() plain {med(ready['plain']['wait_for_ready']):.0f} ms, pooled "
                      f"{med(ready['pooled']['wait_for_ready']):.0f} ms")
    return ready, cpu, claim_ms, fallbacks, pooled_starts


class _CpuProbe:
    """CPU time spent on a start up to its first kernel_info_reply, less
    sensitive to a loaded machine than the wall time. Plain: the kernel
    process's whole CPU when the reply came. Pooled: the launcher's whole
    CPU, plus what the waiting sandbox's program (the kernel to be), its
    helper (claim, relay) and the daemon used between the pool status read
    before the start and the reply; the waiting sandbox's earlier CPU (its
    imports, the refill) is not counted (the refill CPU is reported apart).
    The jupyter_client side is the same for both and not counted."""

    def __init__(self):
        self.pids, self.base, self.ms = {}, {}, None

    def before(self, st, pools):
        waiting = [w for p in pools for w in p.get("waiting", [])]
        if len(waiting) != 1:  # more than one: which one is claimed is the daemon's choice
            return
        self.pids = {"kernel": waiting[0]["program_pid"], "helper": waiting[0]["helper_pid"], "daemon": st.get("pid")}
        self.base = {k: _sched_ns(p) for k, p in self.pids.items()}

    def after(self, km):
        launcher = _sched_ns(km.provisioner.process.pid)
        if not self.pids:  # plain: the kernel is the process jupyter_client started
            self.ms = launcher / 1e6 if launcher is not None else None
            return
        now = {k: _sched_ns(p) for k, p in self.pids.items()}
        if launcher is None or any(now[k] is None or self.base[k] is None for k in now):
            return
        self.ms = (launcher + sum(now[k] - self.base[k] for k in now)) / 1e6

    def claimed(self, log_text):
        """Whether the sandbox measured is the one the launcher claimed (its -v line names the kernel pid)."""
        m = re.search(r"kernel pid (\d+)", log_text)
        return self.ms is not None and m is not None and int(m.group(1)) == self.pids.get("kernel")


def _notebooks(bench, n, rounds, nbdir, outdir):
    """`jupyter nbconvert --execute --to notebook` of the n notebooks one
    after another, with the plain kernel and with the pooled isolated one;
    the two loops alternate (shuffled order every round). Back to back, as
    nbgrader runs them: the pool refills while the next nbconvert starts."""
    nbs = sorted(nbdir.glob("*.ipynb"))
    specs = {"plain": "ikbench-plain", "pooled": NB_SPEC}
    wall = {v: [] for v in specs}
    cpu = {v: [] for v in specs}
    per_nb = {v: [] for v in specs}
    claims = []
    # CPU with the pool's share: a claimed kernel is its helper's child, not
    # nbconvert's, and the refills run in the daemon's helpers; the daemon
    # reaps each helper when its kernel has ended, so the daemon's
    # cutime+cstime over a loop is the refills and kernels of that loop.
    cpu_all = {v: [] for v in specs}
    for r in range(rounds):
        for v in bench.shuffled(specs):
            st0, pools0 = _wait_ready(bench, NB_SPEC) if v == "pooled" else ({}, [])
            daemon = st0.get("pid")
            d0 = _tree_cpu_s([daemon]) if daemon else 0.0
            cmds = [[PYTHON, "-m", "nbconvert", "--execute", "--to", "notebook",
                     f"--ExecutePreprocessor.kernel_name={specs[v]}", "--output-dir", str(outdir / f"{v}-{r}"),
                     str(nb)] for nb in nbs]
            w, c, each = run_timed(cmds, os.environ.copy(), bench.env.work)
            wall[v].append(w)
            cpu[v].append(c)
            per_nb[v] += each
            extra = ""
            if v == "pooled":
                _, pools1 = _wait_ready(bench, NB_SPEC)  # the last refill done, every claimed helper reaped
                time.sleep(0.2)
                claims.append(sum(p["claimed"] for p in pools1) - sum(p["claimed"] for p in pools0))
                cpu_all[v].append(c + _tree_cpu_s([daemon]) - d0)
                extra = f" ({cpu_all[v][-1]:.1f} s with the pool daemon's refills and claimed kernels)"
            else:
                cpu_all[v].append(c)
            bench.log(f"  notebooks round {r + 1}/{rounds}, {v}: {w:.1f} s wall, {c:.1f} s CPU{extra}")
    return {"notebooks": n, "rounds": rounds, "load": loadavg(),
            "variants": {v: {"wall_s": wall[v], "cpu_s": cpu[v], "cpu_with_pool_s": cpu_all[v],
                             "per_notebook_s": summary(per_nb[v])} for v in specs},
            "ratio_wall": paired_ratio_ci(wall["pooled"], wall["plain"]),
            "ratio_cpu": paired_ratio_ci(cpu["pooled"], cpu["plain"]),
            "ratio_cpu_with_pool": paired_ratio_ci(cpu_all["pooled"], cpu_all["plain"]),
            "claims": claims, "cold_fallbacks": [n - c for c in claims]}


def run(bench):
    n, n_nb, rounds = bench.args.pool_runs, bench.args.pool_notebooks, bench.args.pool_rounds
    env = bench.env
    bench.log(f"7. warm pool: {n} interleaved starts plain vs pooled (pool refilled before each), then "
              f"{n_nb} notebooks x {rounds} round(s) through nbconvert, plain vs pooled")
    tmp = Path(tempfile.mkdtemp(prefix="pool-", dir=env.tmp))
    xdg = tmp / "xdg"  # the daemon's socket directory: this run's own daemon
    xdg.mkdir(mode=0o700)
    old_xdg = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(xdg)
    la0 = loadavg()
    res = {"starts": n, "load_before": la0}
    try:
        _write_pooled_spec(env)
        _ik(bench, "install", "--user", "--no-check", "--replace", "--pool", "1", "--name", NB_SPEC, check=True)
        _copy_waiter(env)
        _ik(bench, "pool", "start", "--quiet", check=True)
        # the first launch of a kernelspec creates its pool (and starts cold)
        first = tmp / "pooled-first.log"
        with open(first, "w") as err:
            _start_ready("ikbench-pooled", str(env.work), bench.kernel_log, err)
        if not _pools(bench, "ikbench-pooled")[1]:
            why = [line for line in first.read_text().splitlines() if "pool" in line]
            raise RuntimeError(f"the first pooled launch created no pool: {why[-3:]} (full log {first})")
        ready, cpu, claim_ms, fallbacks, pooled_starts = _starts(bench, n, tmp)
        st, pools = _wait_ready(bench, "ikbench-pooled")  # the last refill is done: its CPU is counted whole
        daemon = st.get("pid")
        kids = subprocess.run(["pgrep", "-P", str(daemon)], capture_output=True, text=True).stdout.split()
        res.update({
            # ready_ms: to the first kernel_info_reply (the measure);
            # wait_for_ready_ms: to jupyter_client's wait_for_ready(), shown too
            "variants": {v: {"ready_ms": summary(ready[v]["kernel_info"]), "samples": ready[v]["kernel_info"],
                             "wait_for_ready_ms": summary(ready[v]["wait_for_ready"]),
                             "wait_for_ready_samples": ready[v]["wait_for_ready"]} for v in ready},
            "ratio_pooled_plain": paired_ratio_ci(ready["pooled"]["kernel_info"], ready["plain"]["kernel_info"]),
            "ratio_wait_for_ready": paired_ratio_ci(ready["pooled"]["wait_for_ready"],
                                                    ready["plain"]["wait_for_ready"]),
            # CPU ms to the first kernel_info_reply (_CpuProbe); not paired (a
            # pooled sample is dropped when another sandbox was claimed)
            "cpu_ms": {v: summary(cpu[v]) for v in cpu}, "cpu_samples": cpu,
            "claim_ms": summary(claim_ms), "cold_fallbacks": fallbacks, "pooled_starts": pooled_starts,
            "waiting_rss_kib": [p["rss_kib"] for p in pools if p["ready"]],
            "refills": 1 + pooled_starts - fallbacks,
            # the daemon's helpers hold the claimed kernels too, so this includes the
            # kernels' own CPU after the claim (start-to-ready and shutdown only here)
            "daemon_cpu_s_incl_reaped_helpers": _tree_cpu_s([daemon] + [int(k) for k in kids]),
            "argv": env.kernel_argv["pooled"],
        })
        bench.results["pool"] = res
        if n_nb > 0 and rounds > 0:
            nbdir = tmp / "nbs"
            nbdir.mkdir()
            make_notebooks(nbdir, n_nb, "ikbench-plain")
            # creates the notebook kernelspec's pool (a cold start), untimed
            run_timed([[PYTHON, "-m", "nbconvert", "--execute", "--to", "notebook",
                        f"--ExecutePreprocessor.kernel_name={NB_SPEC}", "--output-dir", str(tmp / "warm"),
                        str(sorted(nbdir.glob("*.ipynb"))[0])]], os.environ.copy(), env.work)
            res["nbconvert"] = _notebooks(bench, n_nb, rounds, nbdir, tmp / "out")
    finally:
        _ik(bench, "pool", "stop")
        if old_xdg is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = old_xdg
    res["load_after"] = loadavg()
    bench.results["pool"] = res


def _refill_s(s):
    return s["daemon_cpu_s_incl_reaped_helpers"] / s["refills"] if s.get("refills") else float("nan")


def targets(res):
    s = res.get("pool")
    if not s or "ratio_pooled_plain" not in s:
        return []
    r = s["ratio_pooled_plain"]
    rows = [("pooled isolated start-to-ready (`start_kernel()` to the first `kernel_info_reply`) ≤ 0.1× a plain "
             "cold kernel (median of ≥ 30 starts, pool refilled between starts)", f"{fr(r)} ({s['starts']} starts)",
             r["ratio"] <= 0.1)]
    nb = s.get("nbconvert")
    if nb:
        rn = nb["ratio_wall"]
        rows.append(("20 small notebooks one after another with `jupyter nbconvert --execute`: pooled isolated "
                     "wall ≤ 0.6× plain cold kernels", f"{fr(rn)} ({nb['notebooks']} notebooks)",
                     rn["ratio"] <= 0.6))
    rss = s["waiting_rss_kib"]
    vals = [rss[0] / 1024 if rss else float("nan"), _refill_s(s), s["claim_ms"]["median"]]
    rows.append(("memory per waiting sandbox, refill CPU per kernel, claim latency in the launcher: reported",
                 f"{f(vals[0])} MiB, {f(vals[1], 2)} s, {f(vals[2])} ms", all(v == v for v in vals)))
    return rows


def render(res):
    s = res.get("pool")
    if not s or "variants" not in s:
        return []
    L = []
    w = L.append
    w(f"### 7. Warm pool: start-to-ready, pooled isolated vs plain cold ({s['starts']} starts each, interleaved; "
      f"load {s['load_before'][0]:.1f}→{s['load_after'][0]:.1f})")
    w("")
    w("From `KernelManager.start_kernel()` to the first `kernel_info_reply` on shell (the issue's definition of "
      "ready: a real `BlockingKernelClient` of the `KernelManager` sends `kernel_info_request` right after "
      "`start_kernel()`, re-sent every 0.5 s while none came), and, in separate starts, to the return of "
      "jupyter_client's `wait_for_ready()`. Both are shown because `wait_for_ready()` (jupyter_client 7) adds a "
      "wait of its own after that reply: up to 0.2 s for an IOPub message, then it reads IOPub until 0.2 s pass "
      "without one, a floor of ≥ 0.2 s that no kernel can shorten. The pool (this run's daemon, one ready "
      "sandbox of the kernelspec) is refilled before each pooled start; the four starts of a round run in "
      "shuffled order.")
    w("")
    w("| kernelspec | to `kernel_info_reply`: median ms | p25–p75 ms | min–max ms | ratio to plain "
      "| to `wait_for_ready()`: median ms | p25–p75 ms | ratio to plain |")
    w("|---|---|---|---|---|---|---|---|")
    for v, d in s["variants"].items():
        q = d["ready_ms"]
        r = "1" if v == "plain" else fr(s["ratio_pooled_plain"])
        wq = d.get("wait_for_ready_ms")
        if wq:
            rw = "1" if v == "plain" else fr(s["ratio_wait_for_ready"])
            wcols = f"{f(wq['median'], 0)} | {f(wq['p25'], 0)}–{f(wq['p75'], 0)} | {rw}"
        else:
            wcols = "– | – | –"
        w(f"| {v} | {f(q['median'], 0)} | {f(q['p25'], 0)}–{f(q['p75'], 0)} | {f(q['min'], 0)}–{f(q['max'], 0)} "
          f"| {r} | {wcols} |")
    w("")
    c = s.get("cpu_ms")
    if c and c["plain"].get("n") and c["pooled"].get("n"):
        w(f"CPU time to the first `kernel_info_reply` (`/proc/PID/schedstat`, less sensitive to a loaded machine "
          f"than the wall time): plain {f(c['plain']['median'])} ms median (the kernel process, {c['plain']['n']} "
          f"starts), pooled {f(c['pooled']['median'])} ms (the launcher, and from before the start to the reply "
          f"the claimed program, its helper and the daemon; {c['pooled']['n']} starts): "
          f"**{c['pooled']['median'] / c['plain']['median']:.3f}x** (ratio of the medians). The client's own CPU, "
          "the same for both, is not counted; nor is the refill (below).")
        w("")
    rss = s["waiting_rss_kib"]
    w(f"Claim latency inside the launcher (connect, attach, hand-over, `ok`; its `-v` line): median "
      f"{f(s['claim_ms']['median'])} ms (p90 {f(s['claim_ms']['p90'])} ms); {s['cold_fallbacks']} of "
      f"{s.get('pooled_starts', s['starts'])} pooled starts fell back to cold. Memory of one waiting sandbox (helper + init + waiter RSS, shared pages "
      f"counted in each): {f(rss[0] / 1024) if rss else '–'} MiB. Daemon CPU including its reaped helpers: "
      f"{f(s['daemon_cpu_s_incl_reaped_helpers'], 2)} s over {s['refills']} refills, "
      f"{f(_refill_s(s), 2)} s per refill (an upper bound: a claimed kernel stays the helper's child, so its "
      "start and shutdown are counted too).")
    w("")
    nb = s.get("nbconvert")
    if nb:
        load = f"; load {nb['load'][0]:.1f} at the end" if nb.get("load") else ""
        w(f"### 7b. {nb['notebooks']} small notebooks one after another with `jupyter nbconvert --execute` "
          f"({nb['rounds']} round(s) of the two loops, in shuffled order{load})")
        w("")
        w("Each notebook: three small cells; one `nbconvert` process per notebook, back to back (what nbgrader "
          "does per submission), so the pool refills while the next `nbconvert` starts. The two loops of a round "
          "run one after the other in shuffled order; ratios are the median of the per-round ratios. CPU: the "
          "`nbconvert` process trees (a plain kernel is nbconvert's child, a claimed pooled kernel is not); "
          "CPU with the pool: plus the pool daemon's reaped helpers over the loop (the refills and the claimed "
          f"kernels). Pooled: `{NB_SPEC}`, installed with `isolated-kernel install --pool 1`.")
        w("")
        w("| kernel | wall median s | per notebook median s | wall ratio to plain | CPU median s (nbconvert trees) "
          "| CPU ratio | CPU with the pool, median s | ratio |")
        w("|---|---|---|---|---|---|---|---|")
        for v, d in nb["variants"].items():
            rw = "1" if v == "plain" else fr(nb["ratio_wall"])
            rc = "1" if v == "plain" else fr(nb["ratio_cpu"])
            ca = d.get("cpu_with_pool_s")
            ra = "1" if v == "plain" else (fr(nb["ratio_cpu_with_pool"]) if "ratio_cpu_with_pool" in nb else "–")
            w(f"| {v} | {f(med(d['wall_s']))} | {f(d['per_notebook_s']['median'], 2)} | {rw} "
              f"| {f(med(d['cpu_s']))} | {rc} | {f(med(ca)) if ca else '–'} | {ra} |")
        w("")
        w(f"Pooled notebooks that started cold (the pool not yet refilled), per round: "
          f"{', '.join(str(x) for x in nb['cold_fallbacks'])} of {nb['notebooks']}.")
        w("")
    return L


register(Section(
    name="pool", order=80, steps=(Step(80, run),),
    counts=(Count("--pool-runs", full=30, quick=3, help="pool: rounds of four interleaved starts, plain and pooled, "
                  "each to the first kernel_info_reply and to wait_for_ready() (default 30)"),
            Count("--pool-notebooks", full=20, quick=3, help="pool: notebooks of the nbconvert loop (default 20; "
                  "0 skips it)"),
            Count("--pool-rounds", full=3, quick=1, help="pool: rounds of the two nbconvert loops, each round both "
                  "loops in shuffled order (default 3)")),
    render=render, targets=targets))
