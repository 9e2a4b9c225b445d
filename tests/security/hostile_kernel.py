"""A hostile "kernel" for test_hostile_kernel.py (not ipykernel).

Started by isolated-kernel-launcher inside the sandbox as
    python3 hostile_kernel.py -f CONNECTION_FILE
it binds the five ipc sockets named in its private connection file and then
obeys commands that arrive on shell or control as raw frames
    [b"CMD", name, arg...]   ->   reply [b"REPLY", name, result...]
(the launcher's relay forwards frames verbatim, so no HMAC is involved).

Commands: echo, ping_iopub, oversize_iopub, oversize_frames_iopub,
oversize_shell, flood_iopub N SIZE, flood_shell N, garbage, rebind,
hijack HOSTPATH, unhijack, exit CODE.
"""

import json
import os
import sys
import time

import zmq

NAMES = ("shell", "iopub", "stdin", "control", "hb")
BIG = 5 << 20


class Kernel:
    def __init__(self, cf):
        with open(cf) as f:
            info = json.load(f)
        if info.get("transport") != "ipc":
            sys.exit(f"hostile kernel: expected ipc transport, got {info.get('transport')}")
        self.paths = {n: f"{info['ip']}-{info[n + '_port']}" for n in NAMES}
        self.ctx = zmq.Context()
        self.socks = {}
        for n in NAMES:
            self.bind(n)

    def bind(self, name):
        kind = {"iopub": zmq.PUB}.get(name, zmq.ROUTER)
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if name == "iopub":
            s.setsockopt(zmq.SNDHWM, 0)          # push as hard as the relay lets us
        else:
            s.setsockopt(zmq.ROUTER_HANDOVER, 1)  # as ipykernel: a reconnecting relay takes its id over
        with_retry(lambda: s.bind("ipc://" + self.paths[name]))
        self.socks[name] = s

    def close(self, name):
        self.socks.pop(name).close(0)
        try:
            os.unlink(self.paths[name])
        except OSError:
            pass

    def reply(self, sock, envelope, name, *parts):
        sock.send_multipart(envelope + [b"REPLY", name] + [p if isinstance(p, bytes) else str(p).encode()
                                                           for p in parts])

    def run(self):
        while True:
            poller = zmq.Poller()
            for n in ("shell", "control", "stdin", "hb"):
                if n in self.socks:
                    poller.register(self.socks[n], zmq.POLLIN)
            for sock, _ in poller.poll(1000):
                frames = sock.recv_multipart()
                if sock is self.socks.get("hb"):
                    sock.send_multipart(frames)
                    continue
                if b"CMD" not in frames:
                    continue  # garbage from a client: ignore
                i = frames.index(b"CMD")
                envelope, name, args = frames[:i], frames[i + 1], frames[i + 2:]
                self.command(sock, envelope, name, args)

    def command(self, sock, env, name, args):
        iopub = self.socks["iopub"]
        if name == b"echo":
            self.reply(sock, env, name, *args)
        elif name == b"ping_iopub":
            iopub.send_multipart([b"ping", args[0] if args else b""])
            self.reply(sock, env, name)
        elif name == b"oversize_iopub":          # one 5 MB frame (over ZMQ_MAXMSGSIZE)
            iopub.send_multipart([b"big", b"x" * BIG])
            iopub.send_multipart([b"marker", b"after-oversize"])
            self.reply(sock, env, name)
        elif name == b"oversize_frames_iopub":   # 100 frames of 60 KB: each small, 6 MB in all
            iopub.send_multipart([b"bigframes"] + [b"y" * 60000] * 100)
            iopub.send_multipart([b"marker", b"after-oversize-frames"])
            self.reply(sock, env, name)
        elif name == b"oversize_shell":
            sock.send_multipart(env + [b"REPLY", b"big", b"z" * BIG])
        elif name == b"flood_iopub":
            n, size = int(args[0]), int(args[1])
            payload = b"f" * size
            t0 = time.monotonic()
            for k in range(n):
                iopub.send_multipart([b"flood", payload])
            self.reply(sock, env, name, n, time.monotonic() - t0)
        elif name == b"flood_shell":
            n = int(args[0])
            for k in range(n):
                try:
                    sock.send_multipart(env + [b"REPLY", b"flood", str(k).encode()], zmq.NOBLOCK)
                except zmq.Again:
                    pass
            self.reply(sock, env, name, n)
        elif name == b"garbage":
            # Messages the relay cannot route: unknown client ids, a bare id, a 300-frame message.
            relay_id = env[0]
            sock.send_multipart([relay_id, b"no-such-client", b"junk"])
            sock.send_multipart([relay_id, b""])
            sock.send_multipart([relay_id, b"\x00\xff" * 300])
            sock.send_multipart(env + [b"junk"] * 300)
            iopub.send_multipart([b""])
            iopub.send_multipart([b"\x00", b"\xff" * 10])
            self.reply(sock, env, name)
        elif name == b"rebind":
            self.reply(sock, env, name)
            for n in NAMES:
                self.close(n)
            time.sleep(0.3)
            for n in NAMES:
                self.bind(n)
        elif name == b"hijack":
            # Replace the shell socket file with a symlink to a path of the HOST: a relay that
            # follows it through /proc/PID/root connects to a host socket for us.
            target = args[0].decode()
            self.reply(sock, env, name)
            self.close("shell")
            os.symlink(target, self.paths["shell"])
        elif name == b"unhijack":
            try:
                os.unlink(self.paths["shell"])
            except OSError:
                pass
            self.bind("shell")
            self.reply(sock, env, name)
        elif name == b"exit":
            self.reply(sock, env, name)
            time.sleep(0.1)
            os._exit(int(args[0]))
        else:
            self.reply(sock, env, b"unknown", name)


def with_retry(fn, tries=50):
    for k in range(tries):
        try:
            return fn()
        except zmq.ZMQError:
            if k == tries - 1:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    Kernel(sys.argv[sys.argv.index("-f") + 1]).run()
