"""3. Round trip of tiny execute_requests, plain vs isolated (on the "pair"
fixture); 3b. the relay alone, against an echo server that sends every shell
message straight back."""
from __future__ import annotations

import gc
import time

from ..common import PYTHON
from ..kernels import Kernel
from ..procfs import loadavg, sched, sched_delta
from ..registry import Count, Section, Step, register
from ..report import f
from ..rounds import interleaved
from ..stats import diff_ci, pct, summary


ECHO_KERNEL = r"""
# Binds the five sockets of a connection file and sends every shell message
# straight back (no parsing): a kernel with no cost of its own.
import json, sys, zmq
c = json.load(open(sys.argv[sys.argv.index("-f") + 1]))
url = (lambda p: f"ipc://{c['ip']}-{p}") if c["transport"] == "ipc" else (lambda p: f"tcp://{c['ip']}:{p}")
ctx = zmq.Context()
socks = {}
for name, kind in (("shell", zmq.ROUTER), ("control", zmq.ROUTER), ("stdin", zmq.ROUTER), ("iopub", zmq.PUB),
                   ("hb", zmq.REP)):
    socks[name] = ctx.socket(kind)
    socks[name].bind(url(c[name + "_port"]))
shell, hb = socks["shell"], socks["hb"]
poller = zmq.Poller()
poller.register(shell, zmq.POLLIN)
poller.register(hb, zmq.POLLIN)
while True:
    for s, _ in poller.poll():
        s.send_multipart(s.recv_multipart(copy=False), copy=False)
"""


def kernelspecs(env):
    """The echo server direct, and behind the launcher (its script mounted read-only)."""
    echo = env.tmp / "echo_kernel.py"
    echo.write_text(ECHO_KERNEL)
    echo_argv = [PYTHON, str(echo), "-f", "{connection_file}"]
    return {"echo-plain": echo_argv, "echo-isolated": [env.launcher, "--mnt", f". ro:{echo}", "--", *echo_argv]}


def run_rtt(bench, kernels):
    n = bench.args.rtt_count
    warm = min(100, n // 10)
    bench.log(f"3. round trip: {n} tiny execute_requests per kernel, interleaved (+{warm} warm-up)")
    la0 = loadavg()
    content = {"code": "pass", "silent": False, "store_history": False, "allow_stdin": False}
    lpid = kernels["isolated"][0].pid
    gc.collect()
    gc.disable()
    s0 = []  # the launcher's scheduler counters when the kept requests begin

    def one(v, r):
        _, c = kernels[v]
        t0 = time.perf_counter()
        mid = c.send("execute_request", content)
        c.reply(mid, 30)
        t1 = time.perf_counter()
        c.wait_idle(mid, 30)
        t2 = time.perf_counter()
        return (t1 - t0) * 1e6, (t2 - t0) * 1e6
    try:
        got = interleaved(bench, kernels, n, one, warmup=warm, before_kept=lambda: s0.append(sched(lpid)))
        s1 = sched(lpid)
    finally:
        gc.enable()
    reply = {v: [x for x, _ in got[v]] for v in kernels}
    idle = {v: [x for _, x in got[v]] for v in kernels}
    res = {"requests": n, "code": "pass", "load_before": la0, "load_after": loadavg(), "variants": {}}
    d = sched_delta(s0[0] if s0 else None, s1)
    if d:  # per request: 2 shell messages and 3 iopub messages (busy, execute_input, idle)
        res["launcher_per_request"] = {"cpu_us": d[0] / 1e3 / n, "runqueue_wait_us": d[1] / 1e3 / n,
                                       "slices": d[2] / n}
    for v in kernels:
        res["variants"][v] = {"reply_us": summary(reply[v]), "idle_us": summary(idle[v])}
    res["p50_added_us"] = diff_ci(reply["isolated"], reply["plain"])
    res["p99_added_us"] = diff_ci(reply["isolated"], reply["plain"], stat=lambda x: pct(x, 99))
    res["idle_p50_added_us"] = diff_ci(idle["isolated"], idle["plain"])
    bench.results["rtt"] = res


def run_echo(bench):
    """The relay alone: a trivial echo "kernel" (raw frames back on shell),
    so the relay's share of a round trip is not buried under ipykernel's."""
    n = bench.args.echo_count
    bench.log(f"3b. relay-only round trip: {n} messages to an echo server, direct vs through the launcher")
    kernels = {}
    for v in ("echo-plain", "echo-isolated"):
        k = Kernel(bench, v).start()
        c = k.client(reconnect_ivl_ms=5)
        c.send("kernel_info_request")
        if not c.shell.poll(60_000):
            raise TimeoutError(f"{v} did not answer")
        c.shell.recv_multipart()
        kernels[v] = (k, c)
    lpid = kernels["echo-isolated"][0].pid
    la0 = loadavg()
    warm = n // 10
    gc.collect()
    gc.disable()
    s0, s1 = [], None  # the launcher's scheduler counters when the kept messages begin, and at the end

    def one(v, r):
        _, c = kernels[v]
        t0 = time.perf_counter()
        c.session.send(c.shell, "echo_request", {})
        c.shell.recv_multipart()
        return (time.perf_counter() - t0) * 1e6
    try:
        rtt = interleaved(bench, kernels, n, one, warmup=warm, before_kept=lambda: s0.append(sched(lpid)))
        s1 = sched(lpid)
    finally:
        gc.enable()
        for k, _ in kernels.values():
            k.stop()
    res = {"messages": n, "load_before": la0, "load_after": loadavg(),
           "variants": {v: {"rtt_us": summary(x)} for v, x in rtt.items()},
           "p50_added_us": diff_ci(rtt["echo-isolated"], rtt["echo-plain"]),
           "p99_added_us": diff_ci(rtt["echo-isolated"], rtt["echo-plain"], stat=lambda x: pct(x, 99))}
    d = sched_delta(s0[0] if s0 else None, s1)
    if d:
        res["launcher_per_message"] = {"cpu_us": d[0] / 1e3 / n, "runqueue_wait_us": d[1] / 1e3 / n,
                                       "slices": d[2] / n}
    bench.results["echo"] = res


def targets(res):
    s = res.get("rtt")
    if not s:
        return []
    d = s["p50_added_us"]
    return [("relay adds < 100 µs to the p50 round trip",
             f"{d['diff']:+.0f} µs [{d['lo']:+.0f}…{d['hi']:+.0f}]", d["diff"] < 100)]


def render(res):
    s = res.get("rtt")
    if not s:
        return []
    L = []
    w = L.append
    w(f"### 3. Message round trip ({s['requests']} `execute_request` of `pass` each, interleaved; load "
      f"{s['load_before'][0]:.1f}→{s['load_after'][0]:.1f})")
    w("")
    w("| kernel | reply p50 µs | reply p99 µs | to idle p50 µs | to idle p99 µs |")
    w("|---|---|---|---|---|")
    for v, d in s["variants"].items():
        w(f"| {v} | {f(d['reply_us']['median'], 0)} | {f(d['reply_us']['p99'], 0)} | "
          f"{f(d['idle_us']['median'], 0)} | {f(d['idle_us']['p99'], 0)} |")
    d, d99, di = s["p50_added_us"], s["p99_added_us"], s["idle_p50_added_us"]
    w(f"| **isolated − plain** | **{d['diff']:+.0f}** [{d['lo']:+.0f}…{d['hi']:+.0f}] | {d99['diff']:+.0f} | "
      f"{di['diff']:+.0f} | |")
    e = res.get("echo")
    if e:
        w("")
        w(f"Relay alone ({e['messages']} messages to an echo server that sends every shell message straight "
          f"back; load {e['load_before'][0]:.1f}→{e['load_after'][0]:.1f}):")
        w("")
        w("| echo server | p50 µs | p99 µs |")
        w("|---|---|---|")
        for v, x in e["variants"].items():
            w(f"| {v.replace('echo-', '')} | {f(x['rtt_us']['median'], 0)} | {f(x['rtt_us']['p99'], 0)} |")
        d, d99 = e["p50_added_us"], e["p99_added_us"]
        w(f"| **isolated − plain** | **{d['diff']:+.0f}** [{d['lo']:+.0f}…{d['hi']:+.0f}] | {d99['diff']:+.0f} |")
    lp = s.get("launcher_per_request")
    ep = (e or {}).get("launcher_per_message")
    if lp or ep:
        w("")
        parts = []
        if lp:
            parts.append(f"per `execute_request` (2 shell + 3 iopub messages) {lp['cpu_us']:.0f} µs CPU and "
                         f"{lp['runqueue_wait_us']:.0f} µs waiting for a CPU in the run queue")
        if ep:
            parts.append(f"per echo round trip {ep['cpu_us']:.0f} µs CPU and {ep['runqueue_wait_us']:.0f} µs "
                         f"in the run queue")
        w("The launcher's own cost (schedstat of its threads): " + "; ".join(parts) + ".")
    w("")
    return L


register(Section(
    name="rtt", order=40, steps=(Step(41, run_rtt, uses="pair"), Step(50, run_echo)),
    counts=(Count("--rtt-count", full=1000, quick=100),
            Count("--echo-count", full=5000, quick=300, help="relay-only round trips (default 5000)", later=True)),
    render=render, targets=targets, kernelspecs=kernelspecs))
