"""2. Kernel start-to-ready (kernel_info reply) through jupyter_client: plain
vs isolated vs a bubblewrap-wrapped kernelspec."""
from __future__ import annotations

import time

import zmq

from ..kernels import Kernel
from ..procfs import cpu_ms, loadavg
from ..registry import Count, Section, Step, register
from ..report import f, fr
from ..rounds import interleaved
from ..stats import med, paired_ratio_ci, summary


def run(bench):
    n = bench.args.start_runs
    variants = ("plain", "isolated", "bwrap")
    bench.log(f"2. start-to-ready: {len(variants)} kernelspecs x {n} starts, interleaved (+1 warm-up round)")
    la0 = loadavg()

    def progress(done, got):
        if done % 5 == 0:
            m = {v: med([x[0] * 1e3 for x in got[v]]) for v in variants}
            bench.log(f"  round {done}/{n}: median plain {m['plain']:.0f} ms, "
                      f"isolated {m['isolated']:.0f} ms, bwrap {m['bwrap']:.0f} ms")
    got = interleaved(bench, variants, n, lambda v, r: _one_start(bench, v), warmup=1, after_round=progress)
    fast = {v: [x[0] * 1e3 for x in got[v]] for v in variants}     # client reconnect interval 5 ms
    default = {v: [x[1] * 1e3 for x in got[v]] for v in variants}  # jupyter_client's default (libzmq 100 ms)
    launcher_cpu = [x[2] for v in variants for x in got[v] if x[2] is not None]
    res = {"starts": n, "load_before": la0, "load_after": loadavg(), "variants": {},
           "argv": bench.env.kernel_argv}
    for v in variants:
        res["variants"][v] = {"ready_ms": summary(fast[v]), "ready_ms_default_client": summary(default[v]),
                              "samples": fast[v], "samples_default_client": default[v]}
    res["ratio_isolated_plain"] = paired_ratio_ci(fast["isolated"], fast["plain"])
    res["ratio_bwrap_plain"] = paired_ratio_ci(fast["bwrap"], fast["plain"])
    res["ratio_isolated_bwrap"] = paired_ratio_ci(fast["isolated"], fast["bwrap"])
    res["ratio_isolated_plain_default_client"] = paired_ratio_ci(default["isolated"], default["plain"])
    res["launcher_cpu_ms_to_ready"] = summary(launcher_cpu)
    bench.results["start"] = res


def _one_start(bench, variant):
    k = Kernel(bench, variant)
    t0 = time.perf_counter()
    k.start()
    c_fast = k.client(reconnect_ivl_ms=5)
    c_def = k.client()
    ids = {c_fast: c_fast.send("kernel_info_request"), c_def: c_def.send("kernel_info_request")}
    got = {}
    poller = zmq.Poller()
    for c in ids:
        poller.register(c.shell, zmq.POLLIN)
    deadline = time.monotonic() + 120
    while len(got) < 2:
        if time.monotonic() > deadline or not k.alive():
            k.stop()
            raise RuntimeError(f"{variant} kernel died or not ready after 120 s (see {bench.env.tmp}/kernels.log)")
        ev = dict(poller.poll(1000))
        t = time.perf_counter()
        for c in ids:
            if c.shell in ev:
                frames = c.shell.recv_multipart()
                _, ml = c.session.feed_identities(frames)
                m = c.session.deserialize(ml)
                if m["msg_type"] == "kernel_info_reply" and c not in got:
                    got[c] = t - t0
    lcpu = cpu_ms(k.pid) if variant == "isolated" else None
    k.stop()
    return got[c_fast], got[c_def], lcpu


def targets(res):
    s = res.get("start")
    if not s:
        return []
    r = s["ratio_isolated_plain"]
    return [("start-to-ready within 3 % of a plain kernel (isolated/plain ≤ 1.03)", fr(r, 3),
             r["ratio"] <= 1.03)]


def render(res):
    s = res.get("start")
    if not s:
        return []
    L = []
    w = L.append
    w(f"### 2. Kernel start-to-ready ({s['starts']} starts each, interleaved; load "
      f"{s['load_before'][0]:.1f}→{s['load_after'][0]:.1f})")
    w("")
    w("From `KernelManager.start_kernel()` to the first `kernel_info_reply`. *ready*: a client whose sockets "
      "retry every 5 ms (the kernel's own readiness, used for the target); *default client*: jupyter_client's "
      "default 100 ms reconnect interval, which a plain kernel's not-yet-bound port makes visible.")
    w("")
    w("| kernelspec | ready median ms | p25–p75 ms | default client median ms | ready ratio to plain |")
    w("|---|---|---|---|---|")
    for v, d in s["variants"].items():
        r = "1" if v == "plain" else fr(paired_ratio_ci(d["samples"], s["variants"]["plain"]["samples"]), 3)
        w(f"| {v} | {f(d['ready_ms']['median'], 0)} | {f(d['ready_ms']['p25'], 0)}–{f(d['ready_ms']['p75'], 0)} "
          f"| {f(d['ready_ms_default_client']['median'], 0)} | {r} |")
    lc = s["launcher_cpu_ms_to_ready"]
    w("")
    w(f"Launcher CPU from start to ready: median {f(lc['median'], 1)} ms.")
    w("")
    return L


register(Section(
    name="start", order=30, steps=(Step(30, run),),
    counts=(Count("--start-runs", full=30, quick=3),),
    render=render, targets=targets))
