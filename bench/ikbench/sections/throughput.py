"""4. Output throughput, plain vs isolated (on the "pair" fixture): a cell
printing 200 MB, a cell sending 50 large display_data; the launcher's CPU
and memory while it relays."""
from __future__ import annotations

import json
import threading
import time

from ..kernels import DELIM
from ..procfs import cpu_ms, loadavg, status_kb
from ..registry import Count, Section, Step, register
from ..report import f, fr
from ..rounds import interleaved
from ..stats import med, paired_ratio_ci, summary


def run_throughput(bench, kernels):
    reps = bench.args.throughput_reps
    mb = bench.args.stream_mb
    chunk_kib = 64
    n_chunks = mb * 1024 // chunk_kib
    n_disp = bench.args.display_count
    disp_mib = bench.args.display_mib
    cells = {  # code, bytes printed, messages sent
        "stream": (f"_c = ('x' * 1023 + '\\n') * {chunk_kib}\n"
                   f"for _ in range({n_chunks}):\n    print(_c, end='', flush=True)\n",
                   n_chunks * chunk_kib * 1024, n_chunks),
        "display_data": (f"_d = {{'text/plain': 'x' * ({disp_mib} << 20)}}\n"
                         f"for _ in range({n_disp}):\n    display(_d, raw=True)\n",
                         n_disp * (disp_mib << 20), n_disp),
    }
    bench.log(f"4. throughput: stream {mb} MiB in {chunk_kib} KiB chunks, {n_disp} display_data of "
              f"{disp_mib} MiB; {reps} interleaved reps each")
    kl, _ = kernels["isolated"]
    lpid = kl.pid
    out = {"reps": reps, "cells": {}, "load_before": loadavg()}
    for cell, (code, expect, expect_msgs) in cells.items():
        relay_rss_max = 0

        def one(v, r, code=code):
            nonlocal relay_rss_max
            _, c = kernels[v]
            sampler = RssSampler(lpid) if v == "isolated" else None
            t_cpu0 = cpu_ms(lpid)
            el, nbytes, nmsg = _one_output(c, code)
            t_cpu1 = cpu_ms(lpid)
            if sampler:
                relay_rss_max = max(relay_rss_max, sampler.stop())
            return el, nbytes, nmsg, (t_cpu1 - t_cpu0) / 1e3
        got = interleaved(bench, kernels, reps, one, warmup=1)
        rate = {v: [nbytes / el / 1e6 for el, nbytes, _, _ in got[v]] for v in kernels}
        secs = {v: [el for el, _, _, _ in got[v]] for v in kernels}
        got_bytes = {v: [nbytes for _, nbytes, _, _ in got[v]] for v in kernels}
        got_msgs = {v: [nmsg for _, _, nmsg, _ in got[v]] for v in kernels}
        relay_cpu = [{"cpu_s": cpu_s, "wall_s": el, "messages": nmsg} for el, _, nmsg, cpu_s in got["isolated"]]
        lost = {v: [expect_msgs - x for x in got_msgs[v] if x < expect_msgs] for v in kernels}
        res = {"expected_payload_bytes": expect, "expected_messages": expect_msgs, "variants": {},
               "lost_messages_per_rep": lost}
        for v in kernels:
            res["variants"][v] = {"mb_per_s": summary(rate[v]), "seconds": summary(secs[v]),
                                  "payload_bytes": summary(got_bytes[v])}
        res["ratio_isolated_plain"] = paired_ratio_ci(rate["isolated"], rate["plain"])
        cpu_frac = [x["cpu_s"] / x["wall_s"] for x in relay_cpu]
        res["launcher"] = {"cpu_percent_of_one_core": summary([x * 100 for x in cpu_frac]),
                           "cpu_ms_per_100mb": summary([x["cpu_s"] * 1e3 / (expect / 1e8) for x in relay_cpu]),
                           "rss_max_kib_sampled": relay_rss_max,
                           "hwm_kib_after": status_kb(lpid, "VmHWM"),
                           "rss_kib_after": status_kb(lpid, "VmRSS")}
        out["cells"][cell] = res
        bench.log(f"  {cell}: plain {med(rate['plain']):.0f} MB/s, isolated {med(rate['isolated']):.0f} MB/s")
    out["load_after"] = loadavg()
    bench.results["throughput"] = out


def _one_output(c, code):
    """Runs a cell; receives iopub raw (headers parsed, payload only counted)."""
    c.drain_iopub()
    t0 = time.perf_counter()
    mid = c.send("execute_request", {"code": code, "silent": False, "store_history": False})
    nbytes = nmsg = 0
    sock = c.iopub
    while True:
        if not sock.poll(120_000):
            raise TimeoutError("output cell did not finish")
        frames = sock.recv_multipart(copy=False)
        i = next(j for j, f in enumerate(frames) if len(f) == len(DELIM) and f.bytes == DELIM)
        header = json.loads(frames[i + 2].bytes)
        parent = json.loads(frames[i + 3].bytes)
        if parent.get("msg_id") != mid:
            continue
        t = header["msg_type"]
        if t in ("stream", "display_data"):
            nbytes += len(frames[i + 5])
            nmsg += 1
        elif t == "status" and json.loads(frames[i + 5].bytes).get("execution_state") == "idle":
            el = time.perf_counter() - t0
            break
        elif t == "error":
            raise RuntimeError("cell failed: " + frames[i + 5].bytes.decode()[:500])
    c.reply(mid, 30)
    return el, nbytes, nmsg


class RssSampler:
    def __init__(self, pid, interval=0.02):
        self.pid, self.interval, self.max = pid, interval, 0
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self._stop.is_set():
            v = status_kb(self.pid, "VmRSS")
            if v:
                self.max = max(self.max, v)
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self.t.join()
        return self.max


def targets(res):
    s = res.get("throughput")
    if not s:
        return []
    out = []
    for cell, c in s["cells"].items():
        r = c["ratio_isolated_plain"]
        out.append((f"relay keeps ≥ 90 % of plain throughput ({cell})", fr(r), r["ratio"] >= 0.9))
    return out


def render(res):
    s = res.get("throughput")
    if not s:
        return []
    L = []
    w = L.append
    w(f"### 4. Output throughput ({s['reps']} reps each, interleaved; load {s['load_before'][0]:.1f}→"
      f"{s['load_after'][0]:.1f})")
    w("")
    w("| cell | plain MB/s | isolated MB/s | ratio | launcher CPU % of a core | launcher CPU ms / 100 MB |")
    w("|---|---|---|---|---|---|")
    for cell, c in s["cells"].items():
        lp = c["launcher"]
        w(f"| {cell} ({c['expected_payload_bytes'] / 1e6:.0f} MB) "
          f"| {f(c['variants']['plain']['mb_per_s']['median'], 0)} "
          f"| {f(c['variants']['isolated']['mb_per_s']['median'], 0)} | {fr(c['ratio_isolated_plain'])} "
          f"| {f(lp['cpu_percent_of_one_core']['median'], 0)} | {f(lp['cpu_ms_per_100mb']['median'], 0)} |")
    lost = [(cell, v, x, c["expected_messages"], s["reps"]) for cell, c in s["cells"].items()
            for v, x in c.get("lost_messages_per_rep", {}).items() if x]
    if lost:
        w("")
        w("Output lost (iopub messages dropped at a full queue): " + "; ".join(
            f"{cell} {v}: {len(x)} of {reps} reps lost {', '.join(map(str, x))} of {n} messages"
            for cell, v, x, n, reps in lost) + ".")
    w("")
    return L


register(Section(
    name="throughput", order=50, steps=(Step(42, run_throughput, uses="pair"),),
    counts=(Count("--throughput-reps", full=5, quick=2),
            Count("--stream-mb", full=200, quick=20, help="MiB printed by the stream cell (default 200)"),
            Count("--display-count", full=50, quick=10, help="display_data messages (default 50)"),
            Count("--display-mib", full=4, quick=1, help="MiB per display_data message (default 4)")),
    render=render, targets=targets))
