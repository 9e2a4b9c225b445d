"""The state one run shares between its sections: arguments, environment,
zmq context, live kernels (stopped on any exit), the results, the log."""
from __future__ import annotations

import random
import sys
import time

import zmq

from .kernels import PortPool
from .procfs import loadavg


class Bench:
    def __init__(self, args, env):
        self.args = args
        self.env = env
        self.ctx = zmq.Context()
        self.live = []
        self.n_kernels = 0
        self.kernel_log = open(env.tmp / "kernels.log", "ab")
        self.rng = random.Random(args.seed)
        self.ports = PortPool(random.Random())
        self.results = {}
        self.t_start = time.monotonic()

    def log(self, msg):
        el = time.monotonic() - self.t_start
        print(f"[{el:6.1f}s load {loadavg()[0]:.2f}] {msg}", file=sys.stderr, flush=True)

    def shuffled(self, xs):
        xs = list(xs)
        self.rng.shuffle(xs)
        return xs

    def cleanup(self):
        for k in list(self.live):
            try:
                k.stop()
            except Exception:
                pass
