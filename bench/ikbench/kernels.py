"""Kernels and a lean Jupyter client: jupyter_client's KernelManager starts
them, its Session builds and signs every message on plain synchronous zmq
sockets. Also the "pair" fixture: one plain and one isolated kernel that
several sections measure side by side."""
from __future__ import annotations

import os
import signal
import time

import zmq
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session

from .procfs import all_ppids, comm, descendants, wait_gone
from .registry import fixture


DELIM = b"<IDS|MSG>"


class Client:
    """One kernel's shell (+ optional iopub) sockets. Serialises and signs with
    jupyter_client's Session, so messages are exactly what jupyter_client
    sends, without the asyncio machinery of its channel classes."""

    def __init__(self, ctx, info, reconnect_ivl_ms=None, iopub=False):
        key = info["key"] if isinstance(info["key"], bytes) else info["key"].encode()
        self.session = Session(key=key, signature_scheme=info.get("signature_scheme", "hmac-sha256"))
        url = lambda port: f"{info['transport']}://{info['ip']}:{port}"  # noqa: E731
        self.shell = ctx.socket(zmq.DEALER)
        self.shell.linger = 0
        if reconnect_ivl_ms is not None:
            self.shell.setsockopt(zmq.RECONNECT_IVL, reconnect_ivl_ms)
        self.shell.connect(url(info["shell_port"]))
        self.iopub = None
        if iopub:
            self.iopub = ctx.socket(zmq.SUB)
            self.iopub.linger = 0
            self.iopub.setsockopt(zmq.RCVHWM, 0)
            self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
            self.iopub.connect(url(info["iopub_port"]))

    def close(self):
        self.shell.close(0)
        if self.iopub is not None:
            self.iopub.close(0)

    def send(self, msg_type, content=None):
        msg = self.session.send(self.shell, msg_type, content or {})
        return msg["header"]["msg_id"]

    def recv(self, sock, timeout_s):
        if not sock.poll(int(timeout_s * 1000)):
            return None
        frames = sock.recv_multipart(copy=True)
        _, msg_list = self.session.feed_identities(frames, copy=True)
        return self.session.deserialize(msg_list, content=True, copy=True)

    def reply(self, msg_id, timeout_s=30.0):
        end = time.monotonic() + timeout_s
        while True:
            m = self.recv(self.shell, max(0.0, end - time.monotonic()))
            if m is None:
                raise TimeoutError("no reply")
            if m["parent_header"].get("msg_id") == msg_id:
                return m

    def wait_idle(self, msg_id, timeout_s=30.0):
        end = time.monotonic() + timeout_s
        while True:
            m = self.recv(self.iopub, max(0.0, end - time.monotonic()))
            if m is None:
                raise TimeoutError("no idle status")
            if (m["msg_type"] == "status" and m["parent_header"].get("msg_id") == msg_id
                    and m["content"].get("execution_state") == "idle"):
                return m

    def sync_iopub(self, timeout_s=30.0):
        """Until iopub delivers: kernel_info, see its idle status (slow joiner)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            mid = self.send("kernel_info_request")
            self.reply(mid, timeout_s)
            try:
                self.wait_idle(mid, 0.5)
                return
            except TimeoutError:
                continue
        raise TimeoutError("iopub never connected")

    def drain_iopub(self):
        while self.iopub.poll(0):
            self.iopub.recv_multipart()


class Kernel:
    def __init__(self, bench, variant):
        self.bench = bench
        self.variant = variant
        self.km = KernelManager(kernel_name=f"ikbench-{variant}")
        # as MultiKernelManager does (a bare KernelManager would use a mkstemp file in /tmp)
        bench.n_kernels += 1
        self.km.connection_file = str(bench.env.runtime / f"kernel-{os.getpid()}-{bench.n_kernels}.json")
        self.clients = []
        bench.live.append(self)

    def start(self):
        # Ports below the ephemeral range: clients connecting early (before the
        # kernel binds) take ephemeral local ports, and with many kernels one
        # would sooner or later take a port jupyter_client chose for another
        # kernel, which then dies with EADDRINUSE.
        self.km.cache_ports = False  # else the provisioner picks its own (ephemeral) ports
        for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
            setattr(self.km, name, self.bench.ports.take())
        log = self.bench.kernel_log
        self.km.start_kernel(cwd=str(self.bench.env.work), stdout=log, stderr=log)
        self.pid = self.km.provisioner.process.pid
        return self

    def info(self):
        return self.km.get_connection_info()

    def alive(self):
        return self.km.provisioner is not None and self.km.provisioner.process.poll() is None

    def client(self, **kw):
        c = Client(self.bench.ctx, self.info(), **kw)
        self.clients.append(c)
        return c

    def procs(self):
        """{'top': pid, 'init': pid?, 'kernel': pid of ipykernel}."""
        ppids = all_ppids()
        out = {"top": self.pid}
        desc = descendants(self.pid, ppids)
        py = [p for p in desc if comm(p).startswith("python")]
        if self.variant != "plain" and desc:
            out["init"] = desc[0]
        out["kernel"] = py[0] if py else (self.pid if self.variant == "plain" else None)
        out["all"] = [self.pid, *desc]
        return out

    def stop(self):
        pids = [self.pid, *descendants(self.pid)]
        for c in self.clients:
            c.close()
        self.clients = []
        try:
            self.km.shutdown_kernel(now=True)
        except Exception:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        left = wait_gone(pids)
        if left:
            self.bench.log(f"  warning: {self.variant} kernel processes still alive after stop: {left}")
        if self in self.bench.live:
            self.bench.live.remove(self)


class PortPool:
    """Free TCP ports on 127.0.0.1 below the ephemeral port range."""

    def __init__(self, rng):
        try:
            lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
        except (OSError, ValueError, IndexError):
            lo = 32768
        self.lo, self.hi = 10000, max(lo, 12000)
        self.next = rng.randrange(self.lo, self.hi)

    def take(self):
        import socket
        for _ in range(self.hi - self.lo):
            port = self.next
            self.next = self.lo if self.next + 1 >= self.hi else self.next + 1
            with socket.socket() as so:
                try:
                    so.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
        raise RuntimeError("no free port below the ephemeral range")


@fixture("pair")
def pair(bench):
    """{"plain": (Kernel, Client), "isolated": (Kernel, Client)}: started,
    iopub connected, the modules the cells use imported; stopped at the end."""
    bench.log("starting one plain and one isolated kernel for round trip / throughput / footprint")
    kernels = {}
    for v in ("plain", "isolated"):
        k = Kernel(bench, v).start()
        c = k.client(reconnect_ivl_ms=5, iopub=True)
        c.sync_iopub(60)
        kernels[v] = (k, c)
    # load the modules the cells use, outside the timings
    for v, (k, c) in kernels.items():
        mid = c.send("execute_request", {"code": "import sys\nfrom IPython.display import display",
                                         "silent": False, "store_history": False})
        c.reply(mid)
        c.wait_idle(mid)
    time.sleep(1.0)
    try:
        yield kernels
    finally:
        for k, _ in kernels.values():
            k.stop()
