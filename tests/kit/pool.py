"""Pooled kernels for the kernel client and security suites (docs/pool.md):
one `isolated-kernel pool` daemon per user for the whole session, and the
checks that a pooled run really got a waiting sandbox.

A pooled kernelspec is the cold one with the session's pool launcher (a copy
with `isolated-kernel` next to it and the waiter in ../share/pool, as
installed) and `--config pool.json` ({"pool": POOL_SIZE}) in front of the
options. Its pool exists from its first claim, which starts cold; `prime`
makes that claim with a launcher run of the exact kernelspec argv and ends
that launch as soon as the daemon registered the pool, so the test's own
starts all find a waiting sandbox.

Every pooled test then asserts that the daemon's `claimed` count grew and
its `refused` count (claims answered "start cold") did not: a silent cold
fallback fails the test instead of passing it. No pytest fixture here: the
users are kit/kernel.py (khost) and kit/security.py (runner).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from kit.common import base_env, free_port, install_pool_waiter, kill_quietly, merge_env, processes_matching, setpriv_prefix, wait_until

POOL_SIZE = 2         # per kernelspec of the client suites: one claimed, one in reserve while it refills
MAX_SANDBOXES = 48    # per user; the security suite registers one pool per sandbox option set
MAX_MEMORY = "3G"     # room for MAX_SANDBOXES (~60 MiB PSS each): the default 1G holds ~17, and the
                      # session's pools (client suites, lifecycle's own kernelspecs, security) outnumber that
READY_TIMEOUT = 180   # a refill is the waiter's imports: seconds on 2 loaded cores
KINDS = ("cold", "pooled")


class PoolError(AssertionError):
    pass


class Daemon:
    """One user's pool daemon with a private XDG_RUNTIME_DIR."""

    def __init__(self, kit: "PoolKit", mode: str, user: str, uid: int, gid: int, home: Path):
        self.kit, self.mode, self.user, self.uid, self.gid, self.home = kit, mode, user, uid, gid, home
        # short: the socket path must fit a unix socket address (107 bytes)
        self.xdg = Path(tempfile.mkdtemp(prefix=f"ikp-{mode}-", dir="/tmp"))
        self.xdg.chmod(0o700)
        if os.geteuid() == 0:
            os.chown(self.xdg, uid, gid)
        r = self.ik("pool", "start", "--idle", "3h", "--max-sandboxes", str(MAX_SANDBOXES), "--max-memory", MAX_MEMORY)
        if r.returncode != 0:
            raise PoolError(f"pool start as {user} failed: {r.stderr}")
        self.pid = self.status().get("pid")

    def prefix(self) -> list[str]:
        return setpriv_prefix(self.user) if self.mode == "user" else []

    def env(self, extra: dict | None = None) -> dict:
        return merge_env(base_env(self.user, self.home, {"XDG_RUNTIME_DIR": str(self.xdg)}), extra)

    def ik(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run(self.prefix() + [str(self.kit.ik), *args], env=self.env(), text=True,
                              capture_output=True, timeout=60, stdin=subprocess.DEVNULL)

    def status(self) -> dict:
        r = self.ik("pool", "status", "--json")
        return json.loads(r.stdout) if r.returncode == 0 else {}

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.xdg / "isolated-kernel" / "pool.log").read_text(errors="replace")[-3000:]
        return ""

    def pool(self, argv: list[str], status: dict | None = None) -> dict | None:
        """The daemon's pool of the kernelspec whose argv is ARGV."""
        for p in (status or self.status()).get("pools", []):
            if p.get("spec") == list(map(str, argv[1:])) or p.get("spec") == list(map(str, argv)):
                return p
        return None

    def counts(self) -> dict:
        """{"claimed", "refused"} summed over every pool of this daemon."""
        pools = self.status().get("pools", [])
        return {k: sum(p.get(k, 0) for p in pools) for k in ("claimed", "refused", "discarded")}

    # -- getting a pool ready ---------------------------------------------------
    def prime(self, argv: list[str], env: dict, cwd: Path, runtime: Path):
        """Registers the pool of kernelspec ARGV: one launch of that argv (its
        claim is refused and starts the fill), ended once the daemon knows it."""
        conn = runtime / f"kernel-prime-{uuid.uuid4().hex[:8]}.json"
        ports = {f"{c}_port": free_port() for c in ("shell", "iopub", "stdin", "control", "hb")}
        conn.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1", "key": uuid.uuid4().hex,
                                    "signature_scheme": "hmac-sha256", "kernel_name": "", **ports}))
        conn.chmod(0o600)
        if os.geteuid() == 0:
            os.chown(conn, self.uid, self.gid)
        cmd = [a.replace("{connection_file}", str(conn)) for a in map(str, argv)]
        p = subprocess.Popen(self.prefix() + cmd, cwd=cwd, env=merge_env(dict(env), {"XDG_RUNTIME_DIR": str(self.xdg)}),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            wait_until(lambda: self.pool(argv) is not None or p.poll() is not None, 60, 0.05)
        finally:
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            kill_quietly(pid for pid, _ in processes_matching([str(conn)]))
            conn.unlink(missing_ok=True)
        if self.pool(argv) is None:
            raise PoolError(f"the daemon of {self.user} never registered the pool of {argv}\n"
                            f"status: {json.dumps(self.status())}\n--- pool.log\n{self.log_tail()}")

    def ensure_ready(self, argv: list[str], env: dict, cwd: Path, runtime: Path, need: int = POOL_SIZE):
        """Waits (only when needed) until NEED sandboxes of kernelspec ARGV wait."""
        if self.pool(argv) is None:
            self.prime(argv, env, cwd, runtime)
        last: dict = {}

        def ready():
            nonlocal last
            last = self.pool(argv) or {}
            return last.get("ready", 0) >= need
        if not wait_until(ready, READY_TIMEOUT, 0.1):
            raise PoolError(f"pool of {argv} as {self.user} not ready after {READY_TIMEOUT}s: {json.dumps(last)}\n"
                            f"--- pool.log\n{self.log_tail()}")

    # -- what became of the claims ------------------------------------------------
    def claimed_still_running(self, grace: float = 0.0) -> list[tuple[int, str]]:
        """The kernels claimed from this daemon and not yet ended (see claimed_kernels)."""
        if grace:
            wait_until(lambda: not claimed_kernels(self.status), grace, 0.1)
        return claimed_kernels(self.status)

    def stop(self):
        with contextlib.suppress(Exception):
            self.ik("pool", "stop")
        if self.pid:
            wait_until(lambda: not Path(f"/proc/{self.pid}").exists(), 10, 0.1)
        shutil.rmtree(self.xdg, ignore_errors=True)


class PoolKit:
    """The session's pool launcher copy and its daemons (one per user, started on first use)."""

    def __init__(self, root: Path, build: Path):
        self.root = root / "pool"
        self.bindir = self.root / "bin"
        self.bindir.mkdir(parents=True, mode=0o755)
        self.root.chmod(0o755)
        for prog in ("isolated-kernel-launcher", "isolated-kernel"):
            shutil.copy2(build / prog, self.bindir / prog)
            (self.bindir / prog).chmod(0o755)
        install_pool_waiter(self.root)
        self.launcher = self.bindir / "isolated-kernel-launcher"
        self.ik = self.bindir / "isolated-kernel"
        self.configs: dict[int, Path] = {}
        self.config = self.config_for(POOL_SIZE)
        self.daemons: dict[str, Daemon] = {}
        self.started = 0.0   # seconds spent starting daemons and priming pools (reported at the end)

    def config_for(self, size: int) -> Path:
        if size not in self.configs:
            c = self.root / f"pool-{size}.json"
            c.write_text(json.dumps({"pool": size}) + "\n")
            c.chmod(0o644)
            self.configs[size] = c
        return self.configs[size]

    def argv_prefix(self, size: int = POOL_SIZE) -> list[str]:
        """What a pooled kernelspec's argv starts with, before its sandbox options."""
        return [str(self.launcher), "--config", str(self.config_for(size))]

    def daemon(self, mode: str, pw) -> Daemon:
        if mode not in self.daemons:
            t0 = time.monotonic()
            self.daemons[mode] = Daemon(self, mode, pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))
            self.started += time.monotonic() - t0
        return self.daemons[mode]

    def close(self):
        for d in self.daemons.values():
            d.stop()
        kill_quietly(pid for pid, _ in processes_matching([str(self.root)]))
        shutil.rmtree(self.root, ignore_errors=True)


class ClaimCheck:
    """Asserts that the claims made between `start` and `check` all got a waiting sandbox."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.before = daemon.counts()

    def check(self, what: str, min_claims: int = 1):
        after = self.daemon.counts()
        claimed = after["claimed"] - self.before["claimed"]
        refused = after["refused"] - self.before["refused"]
        if claimed < min_claims or refused:
            raise PoolError(f"{what}: not (only) pooled: {claimed} claimed (expected >= {min_claims}), "
                            f"{refused} refused (started cold); before {self.before}, after {after}\n"
                            f"pools: {json.dumps(self.daemon.status().get('pools'))}\n"
                            f"--- pool.log\n{self.daemon.log_tail()}")
        return claimed


# ----------------------------------------------------------------- claimed kernels


def _entries(status: dict) -> int:
    return sum(p.get("ready", 0) + p.get("starting", 0) for p in status.get("pools", []))


def _helpers(daemon_pid) -> list[tuple[int, str]]:
    """The daemon's helpers (its children; a helper's sandbox init is the helper's child)."""
    out = []
    for pid, cmd in processes_matching(["--pool-helper"]):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == daemon_pid:
                out.append((pid, cmd))
    return out


def claimed_kernels(status_fn) -> list[tuple[int, str]]:
    """One (helper pid, description) per pooled kernel claimed and still running: the
    daemon's helpers beyond its pools' entries (waiting or starting). A claimed kernel's
    command line reads as a cold one's (its connection file), but its helper's and its
    sandbox init's are the helper's template and name nothing of the claim, so which
    helper serves which claim cannot be told; the count can. STATUS_FN returns `pool status --json`;
    the helpers are counted between two equal statuses (a refill may start meanwhile)."""
    for _ in range(20):
        before = status_fn()
        helpers = _helpers(before.get("pid"))
        after = status_fn()
        if before.get("pid") and _entries(before) == _entries(after):
            n = len(helpers) - _entries(after)
            return [(pid, f"claimed pooled kernel (helper: {cmd})") for pid, cmd in helpers[:max(n, 0)]]
        time.sleep(0.05)
    return []


# ----------------------------------------------------------------- client side


def client_status() -> dict:
    """`pool status --json` from a client process of a pooled host ({} elsewhere)."""
    ik = os.environ.get("IK_POOL_BIN")
    if not ik:
        return {}
    r = subprocess.run([ik, "pool", "status", "--json"], capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def wait_for_waiting_sandbox(argv: list[str], timeout: float = READY_TIMEOUT) -> None:
    """In a client process (IK_POOL_BIN and XDG_RUNTIME_DIR set by the pooled
    host): blocks until the pool of kernelspec ARGV has a sandbox waiting, so
    a start right after a claim is not a cold start. Nothing for a kernelspec
    without a pool."""
    ik = os.environ.get("IK_POOL_BIN")
    if not ik:
        return
    spec = list(map(str, argv[1:]))

    def ready():
        mine = [p for p in client_status().get("pools", []) if p.get("spec") == spec]
        return not mine or mine[0].get("ready", 0) >= 1
    wait_until(ready, timeout, 0.1)


def install_client_wait() -> None:
    """Makes every jupyter_client kernel launch of this (client) process wait
    for a waiting sandbox first (wait_for_waiting_sandbox): restarts, the
    restarter and nbclient included. The launch itself is jupyter_client's own."""
    if not os.environ.get("IK_POOL_BIN"):
        return
    from jupyter_client.provisioning.local_provisioner import LocalProvisioner
    original = LocalProvisioner.pre_launch

    async def pre_launch(self, **kwargs):
        wait_for_waiting_sandbox(self.kernel_spec.argv)
        return await original(self, **kwargs)
    LocalProvisioner.pre_launch = pre_launch
