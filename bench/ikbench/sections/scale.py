"""6. Scale: N kernels started at once, plain and isolated batches in ABBA
order: time to all-ready, memory per kernel (host, PSS, memory cgroup)."""
from __future__ import annotations

import gc
import os
import signal
import time

import zmq

from ..kernels import Kernel
from ..procfs import all_ppids, comm, cpu_ms, descendants, loadavg, meminfo, memcg_snapshot, own_memcg, rollup
from ..registry import Count, Section, Step, register
from ..report import f
from ..stats import med, summary


def run(bench):
    n = bench.args.scale
    rounds = bench.args.scale_rounds
    order = []
    for r in range(rounds):  # ABBA ... so a drift in load hits both alike
        order += ["plain", "isolated"] if r % 2 == 0 else ["isolated", "plain"]
    bench.log(f"6. scale: {n} kernels at once, batches {' '.join(order)}")
    batches = []
    for v in order:
        b = _scale_batch(bench, v, n)
        batches.append(b)
        bench.log(f"  {v}: all {n} ready in {b['all_ready_s']:.1f} s, host memory "
                  f"+{b['host_used_delta_mib_per_kernel']:.1f} MiB/kernel")
    res = {"kernels": n, "order": order, "batches": batches}
    for v in ("plain", "isolated"):
        bs = [b for b in batches if b["variant"] == v]
        res[v] = {"all_ready_s": med([b["all_ready_s"] for b in bs]),
                  "median_ready_s": med([b["median_ready_s"] for b in bs]),
                  "host_used_delta_mib_per_kernel": med([b["host_used_delta_mib_per_kernel"] for b in bs]),
                  "kernel_pss_mib": med([b["kernel_pss_mib"] for b in bs]),
                  "wrapper_pss_mib": med([b["wrapper_pss_mib"] for b in bs]),
                  "shmem_delta_mib_per_kernel": med([b["shmem_delta_mib_per_kernel"] for b in bs]),
                  "slab_delta_mib_per_kernel": med([b["slab_delta_mib_per_kernel"] for b in bs]),
                  "launcher_cpu_ms_to_ready": med([b["launcher_cpu_ms_to_ready"]["median"] for b in bs
                                                   if b["launcher_cpu_ms_to_ready"]]),
                  "memcg_mib_per_kernel": ({k: med([b["memcg_delta_mib_per_kernel"][k] for b in bs])
                                            for k in bs[0]["memcg_delta_mib_per_kernel"]}
                                           if all(b["memcg_delta_mib_per_kernel"] for b in bs) else None)}
    res["ratio_all_ready"] = res["isolated"]["all_ready_s"] / res["plain"]["all_ready_s"]
    res["overhead_host_mib_per_kernel"] = (res["isolated"]["host_used_delta_mib_per_kernel"]
                                           - res["plain"]["host_used_delta_mib_per_kernel"])
    gi, gp = res["isolated"]["memcg_mib_per_kernel"], res["plain"]["memcg_mib_per_kernel"]
    res["overhead_memcg_mib_per_kernel"] = ({k: gi[k] - gp[k] for k in gi} if gi and gp else None)
    bench.results["scale"] = res


def _scale_batch(bench, variant, n):
    gc.collect()
    time.sleep(2.0)
    cg = own_memcg()
    g0 = memcg_snapshot(cg)
    m0 = meminfo()
    la0 = loadavg()
    kernels, clients, sent = [], [], []
    t0 = time.perf_counter()
    poller = zmq.Poller()
    for _ in range(n):
        k = Kernel(bench, variant).start()
        c = k.client()  # jupyter_client's default reconnect interval: 50 clients retrying every 5 ms would
        # themselves load the machine
        kernels.append(k)
        clients.append(c)
        sent.append(c.send("kernel_info_request"))
        poller.register(c.shell, zmq.POLLIN)
    t_launched = time.perf_counter() - t0
    ready = [None] * n
    by_sock = {c.shell: i for i, c in enumerate(clients)}
    deadline = time.monotonic() + bench.args.scale_timeout
    dead = set()
    while any(r is None for i, r in enumerate(ready) if i not in dead):
        if time.monotonic() > deadline:
            break
        ev = poller.poll(1000)
        for i, k in enumerate(kernels):
            if ready[i] is None and i not in dead and not k.alive():
                dead.add(i)
                bench.log(f"  warning: {variant} kernel {i} died before it was ready (see {bench.env.tmp}/kernels.log)")
        t = time.perf_counter() - t0
        for s, _ in ev:
            i = by_sock[s]
            frames = s.recv_multipart()
            _, ml = clients[i].session.feed_identities(frames)
            m = clients[i].session.deserialize(ml)
            if m["msg_type"] == "kernel_info_reply" and ready[i] is None:
                ready[i] = t
    not_ready = sum(1 for r in ready if r is None)
    time.sleep(3.0)  # let start-up garbage settle before reading memory
    m1 = meminfo()
    g1 = memcg_snapshot(cg)
    ppids = all_ppids()
    kernel_pss, wrapper_pss, launcher_cpu = [], [], []
    for k in kernels:
        desc = descendants(k.pid, ppids)
        allp = [k.pid, *desc]
        py = [p for p in allp if comm(p).startswith("python")]
        kp = py[-1] if py else None
        kernel_pss.append((rollup(kp).get("Pss", 0) if kp else 0) / 1024)
        wrapper_pss.append(sum(rollup(p).get("Pss", 0) for p in allp if p != kp) / 1024)
        if variant == "isolated":
            t = cpu_ms(k.pid)
            if t is not None:
                launcher_cpu.append(t)
    used = lambda m: m["MemTotal"] - m["MemAvailable"]  # noqa: E731
    b = {
        "variant": variant, "kernels": n, "not_ready": not_ready, "died": len(dead), "load_before": la0,
        "load_after": loadavg(),
        "launched_s": t_launched,
        "all_ready_s": max(r for r in ready if r is not None) if n - not_ready else float("nan"),
        "median_ready_s": med([r for r in ready if r is not None]),
        "host_used_delta_mib_per_kernel": (used(m1) - used(m0)) / n / 2**20,
        "shmem_delta_mib_per_kernel": (m1["Shmem"] - m0["Shmem"]) / n / 2**20,
        "slab_delta_mib_per_kernel": (m1.get("Slab", 0) - m0.get("Slab", 0)) / n / 2**20,
        "kernel_pss_mib": med(kernel_pss),
        "wrapper_pss_mib": med(wrapper_pss),
        "launcher_cpu_ms_to_ready": summary(launcher_cpu) if launcher_cpu else None,
        "memcg": (cg[0] if cg else None),
        "memcg_delta_mib_per_kernel": ({k: (g1[k] - g0[k]) / n / 2**20 for k in g0} if g0 and g1 else None),
    }
    for k in kernels:
        for c in k.clients:
            c.close()
        k.clients = []
    for k in kernels:  # kill all first, then wait for all
        try:
            os.killpg(k.pid, signal.SIGKILL)
        except OSError:
            pass
    for k in kernels:
        k.stop()
    return b


def render(res):
    s = res.get("scale")
    if not s:
        return []
    L = []
    w = L.append
    w(f"### 6. Scale: {s['kernels']} kernels started at once (batches {' '.join(s['order'])})")
    w("")
    w("| kernels | all ready s | median ready s | host used MiB/kernel | kernel PSS MiB | "
      "launcher+init PSS MiB | cgroup anon+shmem+kernel MiB/kernel | launcher CPU ms to ready |")
    w("|---|---|---|---|---|---|---|---|")
    for v in ("plain", "isolated"):
        d = s[v]
        g = d.get("memcg_mib_per_kernel")
        gs = f"{g['anon']:.1f}+{g['shmem']:.2f}+{g['kernel']:.2f}" if g else "–"
        w(f"| {v} | {f(d['all_ready_s'])} | {f(d['median_ready_s'])} | {f(d['host_used_delta_mib_per_kernel'])} "
          f"| {f(d['kernel_pss_mib'])} | {f(d['wrapper_pss_mib'], 2)} | {gs} "
          f"| {f(d.get('launcher_cpu_ms_to_ready'), 0) if v == 'isolated' else ''} |")
    w("")
    go = s.get("overhead_memcg_mib_per_kernel")
    gtxt = (f"{sum(go.values()):+.1f} MiB by this benchmark's memory cgroup (anon {go['anon']:+.1f}, shmem "
            f"{go['shmem']:+.2f}, kernel {go['kernel']:+.2f})" if go else "no memory cgroup to read")
    w(f"All-ready ratio isolated/plain {s['ratio_all_ready']:.2f}. Host memory per kernel beyond a plain kernel: "
      f"{gtxt}; {s['overhead_host_mib_per_kernel']:+.1f} MiB by MemTotal−MemAvailable (noisy on a shared "
      f"host); the launcher and sandbox init themselves: {f(s['isolated']['wrapper_pss_mib'], 2)} MiB PSS.")
    notready = [b for b in s["batches"] if b["not_ready"]]
    if notready:
        w("")
        w("Batches with kernels not ready before the timeout: " +
          ", ".join(f"{b['variant']} ({b['not_ready']})" for b in notready))
    w("")
    return L


register(Section(
    name="scale", order=70, steps=(Step(70, run),),
    counts=(Count("--scale", full=50, quick=4, help="kernels started at once (default 50)"),
            Count("--scale-rounds", full=2, quick=1, help="batches per variant (default 2, ABBA order)"),
            Count("--scale-timeout", type=float, default=600)),
    render=render))
