"""5. Footprint: RSS, PSS, CPU and wake-ups of the launcher, the sandbox init
and the kernels while they idle (on the "pair" fixture, before any traffic);
5b. the launcher while its kernel has not bound its sockets yet."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

from ..procfs import cpu_ms, ctx_switches, loadavg, rollup, sched, sched_delta, status_kb, threads
from ..registry import Count, Section, Step, register
from ..report import f


def run_idle(bench, kernels):
    """Kernels of the pair fixture idle, before any traffic: no client message, no heartbeat."""
    secs = bench.args.idle_seconds
    kl, _ = kernels["isolated"]
    kp, _ = kernels["plain"]
    pi, pp = kl.procs(), kp.procs()
    watched = {"launcher": pi["top"], "sandbox init": pi.get("init"), "isolated kernel": pi["kernel"],
               "plain kernel": pp["kernel"]}
    bench.log(f"5. footprint: all kernels idle for {secs:.0f} s (no client traffic, no heartbeats)")
    before = {n: (cpu_ms(p), ctx_switches(p)) for n, p in watched.items() if p}
    t0 = time.monotonic()
    time.sleep(secs)
    el = time.monotonic() - t0
    after = {n: (cpu_ms(p), ctx_switches(p)) for n, p in watched.items() if p}
    idle = {}
    for n, p in watched.items():
        if not p or before[n][0] is None or after[n][0] is None:
            continue
        dms = after[n][0] - before[n][0]
        dcs = after[n][1] - before[n][1]
        r = rollup(p)
        idle[n] = {"pid": p, "cpu_ms": dms, "cpu_percent": dms / 1e3 / el * 100,
                   "wakeups": dcs, "wakeups_per_s": dcs / el,
                   "rss_kib": status_kb(p, "VmRSS"), "hwm_kib": status_kb(p, "VmHWM"),
                   "pss_kib": r.get("Pss"), "pss_anon_kib": r.get("Pss_Anon"),
                   "rss_anon_kib": status_kb(p, "RssAnon"), "threads": threads(p)}
    bench.results["idle"] = {"seconds": el, "load": loadavg(), "processes": idle}


def run_waiting(bench):
    """The launcher while its kernel has not bound its sockets yet (as
    during every kernel start): a kernel command that only sleeps."""
    secs = bench.args.waiting_seconds
    bench.log(f"5b. launcher while the kernel has not bound its sockets ({secs:.0f} s)")
    conn = bench.env.tmp / "waiting.json"
    ports = []
    for _ in range(5):
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            ports.append(so.getsockname()[1])
    conn.write_text(json.dumps({"shell_port": ports[0], "iopub_port": ports[1], "stdin_port": ports[2],
                                "control_port": ports[3], "hb_port": ports[4], "ip": "127.0.0.1",
                                "key": "x", "transport": "tcp", "signature_scheme": "hmac-sha256"}))
    p = subprocess.Popen([bench.env.launcher, "-f", str(conn), "--", "sleep", str(int(secs) + 30)],
                         cwd=bench.env.work, stdout=bench.kernel_log, stderr=bench.kernel_log, start_new_session=True)
    try:
        time.sleep(0.5)
        a, ca = sched(p.pid), ctx_switches(p.pid)
        t0 = time.monotonic()
        time.sleep(secs)
        el = time.monotonic() - t0
        b, cb = sched(p.pid), ctx_switches(p.pid)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    d = sched_delta(a, b)
    bench.results["waiting"] = {"seconds": el, "cpu_percent": d[0] / 1e9 / el * 100 if d else None,
                                "wakeups_per_s": (cb - ca) / el if ca is not None and cb is not None else None}


def targets(res):
    s = res.get("idle")
    if not s or "launcher" not in s["processes"]:
        return []
    out = []
    p = s["processes"]["launcher"]
    out.append(("idle launcher CPU indistinguishable from zero",
                f"{p['cpu_ms']:.2f} ms CPU, {p['wakeups']} wake-ups in {s['seconds']:.0f} s",
                p["cpu_ms"] < 1.0 and p["wakeups_per_s"] < 0.2))
    rss = p["rss_kib"] / 1024
    extra = ""
    th = res.get("throughput")
    if th:
        peak = max(c["launcher"]["hwm_kib_after"] or 0 for c in th["cells"].values()) / 1024
        extra = f"; peak while relaying {peak:.1f} MiB"
    out.append(("launcher RSS < 10 MiB", f"{rss:.1f} MiB idle{extra}", rss < 10))
    return out


def render(res):
    s = res.get("idle")
    if not s:
        return []
    L = []
    w = L.append
    w(f"### 5. Footprint ({s['seconds']:.0f} s idle, no client traffic; load {s['load'][0]:.1f})")
    w("")
    w("| process | CPU ms | wake-ups | RSS MiB | PSS MiB | anon RSS MiB | threads |")
    w("|---|---|---|---|---|---|---|")
    for n, p in s["processes"].items():
        w(f"| {n} | {f(p['cpu_ms'], 1)} | {p['wakeups']} | {f(p['rss_kib'] / 1024)} | "
          f"{f((p['pss_kib'] or 0) / 1024)} | {f((p['rss_anon_kib'] or 0) / 1024)} | {p['threads']} |")
    th = res.get("throughput")
    if th:
        w("")
        parts = [f"{cell} RSS max {f(c['launcher']['rss_max_kib_sampled'] / 1024)} MiB"
                 for cell, c in th["cells"].items()]
        peak = max(c["launcher"]["hwm_kib_after"] or 0 for c in th["cells"].values())
        w(f"Launcher while relaying (4), sampled every 20 ms: {'; '.join(parts)}; peak (VmHWM) "
          f"{f(peak / 1024)} MiB.")
    wt = res.get("waiting")
    if wt:
        w("")
        w(f"Launcher while its kernel has not yet bound its sockets (every kernel start; {wt['seconds']:.0f} s "
          f"with a kernel command that only sleeps): {f(wt['cpu_percent'], 1)} % of a core, "
          f"{f(wt['wakeups_per_s'], 0)} wake-ups/s.")
    w("")
    return L


register(Section(
    name="footprint", order=60, steps=(Step(40, run_idle, uses="pair"), Step(60, run_waiting)),
    counts=(Count("--idle-seconds", full=30, quick=3, type=float),
            Count("--waiting-seconds", full=5, quick=2, type=float,
                  help="launcher observed before its kernel binds (default 5)", later=True)),
    render=render, targets=targets))
