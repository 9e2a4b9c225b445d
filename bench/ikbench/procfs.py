"""Readings of /proc and the memory cgroup: load, memory, CPU and scheduler
time, context switches, the process tree. Read only; never writes."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from .common import CLK_TCK


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    return out


def proc_stat(pid):
    """(ppid, utime+stime ticks) or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def cpu_ticks(pid):
    st = proc_stat(pid)
    return st[1] if st else None


def sched(pid):
    """(ns on CPU, ns waiting in the run queue, time slices) summed over the
    threads of pid (/proc/PID/task/*/schedstat), or None."""
    cpu = wait = slices = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                a, b, c = (int(x) for x in f.read().split()[:3])
        except (OSError, ValueError):
            continue
        cpu, wait, slices = cpu + a, wait + b, slices + c
    return cpu, wait, slices


def sched_delta(before, after):
    if not before or not after:
        return None
    return tuple(a - b for a, b in zip(after, before))


def cpu_ms(pid):
    """CPU time of pid so far in ms: schedstat (ns) when the kernel has it, else ticks."""
    st = sched(pid)
    if st and st[0]:
        return st[0] / 1e6
    t = cpu_ticks(pid)
    return t * 1000.0 / CLK_TCK if t is not None else None


def own_memcg():
    """Files of this process's memory cgroup (v2 or v1), or None. Only read."""
    try:
        lines = open("/proc/self/cgroup").read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, ctrl, path = line.split(":", 2)
        if ctrl == "memory":
            d = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if (d / "memory.usage_in_bytes").exists():
                return ("v1", d)
    for line in lines:
        _, ctrl, path = line.split(":", 2)
        if ctrl == "":
            d = Path("/sys/fs/cgroup") / path.lstrip("/")
            if (d / "memory.current").exists() and path != "/":
                return ("v2", d)
    return None


def memcg_snapshot(cg):
    """Non-file memory charged to our cgroup: anon + shmem + kernel, in bytes."""
    if not cg:
        return None
    kind, d = cg
    try:
        st = {}
        for line in (d / "memory.stat").read_text().splitlines():
            k, v = line.split()
            st[k] = int(v)
        if kind == "v1":
            kmem = int((d / "memory.kmem.usage_in_bytes").read_text())
            return {"anon": st.get("rss", 0), "shmem": st.get("shmem", 0), "kernel": kmem}
        kernel = st.get("kernel", st.get("slab", 0) + st.get("kernel_stack", 0) + st.get("pagetables", 0)
                        + st.get("sock", 0))
        return {"anon": st.get("anon", 0), "shmem": st.get("shmem", 0), "kernel": kernel}
    except (OSError, ValueError):
        return None


def ctx_switches(pid):
    """Voluntary + involuntary context switches summed over all threads."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            total += int(line.split()[1])
            except OSError:
                pass
    except OSError:
        return None
    return total


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rollup(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                m = re.match(r"(\w+):\s+(\d+) kB", line)
                if m:
                    out[m.group(1)] = int(m.group(2))
    except OSError:
        return {}
    return out


def threads(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


def all_ppids():
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                out[int(d)] = st[0]
    return out


def descendants(pid, ppids=None):
    ppids = ppids if ppids is not None else all_ppids()
    kids = {}
    for p, pp in ppids.items():
        kids.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in sorted(kids.get(p, [])):
            out.append(c)
            todo.append(c)
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def wait_gone(pids, timeout=15.0):
    end = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < end:
        left = [p for p in left if os.path.exists(f"/proc/{p}") and not _zombie(p)]
        if left:
            time.sleep(0.02)
    return left


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return s[s.rindex(")") + 2] in "ZX"
    except OSError:
        return True
