"""The security kit: the adversarial suite's machinery (tests/security/): the `sec`, `runner`
and `kernel_pool` fixtures.

Every probe is a Python snippet that runs INSIDE the sandbox and reports what
it observed as one JSON "verdict" line; the test then asserts on the verdict
(and, where it matters, on the host: processes still alive, listeners that saw
no connection, a pty that received no injected input). A probe that gets the
sandboxed process killed (e.g. a seccomp KILL action) prints no verdict, which
fails the test.

Each probe runs through the `runner` fixture, four times:

  isolate-root   `isolate [OPTS] -- /usr/bin/python3 -c SNIPPET` as root
  isolate-user   the same as the unprivileged user `iktest` (setpriv)
  kernel-root    inside an isolated Jupyter kernel: a kernelspec whose argv is
                 [launcher, OPTS..., "--", python3, -m, ipykernel_launcher,
                 -f, {connection_file}], started by jupyter_client as root
  kernel-user    the same, with the client (and so the launcher) as iktest
  pooled-root    the kernel runners with a pooled kernelspec (docs/pool.md): the
  pooled-user    kernel is claimed from the user's session pool daemon
                 (kit/pool.py); the start fails unless it was claimed
                 (no silent cold fallback)

Kernels are started by a client driver process (kdriver.py) that runs as the
caller, one kernel per (mode, options) per test module, and reused by every
probe of that module. A test module names its sandbox options in
SANDBOX_OPTS (a list of str.format templates, see Ctx.fmt).

The caller's environment always carries secret variables (JUPYTER_TOKEN,
AWS_SECRET_ACCESS_KEY, ...) that must never be visible inside.

Environment:
  ISOLATE_BIN, IK_LAUNCHER   the binaries under test (default: build/)
  IK_TEST_USER               the unprivileged user (default: iktest)
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import pwd
import queue
import random
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kit.common import (KIT, PYTHON, REPO, TEST_USER, base_env, ensure_test_user, kill_quietly, processes_matching,
                        resolve_mode, setpriv_prefix)
from kit.pool import ClaimCheck, PoolError

VERDICT = "@@VERDICT@@ "
DRIVER_PREFIX = "@@IKSEC@@ "
RUNNERS = ["isolate-root", "isolate-user", "kernel-root", "kernel-user", "pooled-root", "pooled-user"]
KERNEL_START_TIMEOUT = 60
PROBE_TIMEOUT = 30


# ====================================================================== prelude
# Prepended to every probe. Raw syscalls go through libc's syscall() so the
# seccomp filter sees exactly the arguments we choose.

PRELUDE = r'''
import ctypes, errno, json, os, socket, struct, sys, time
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
NR = dict(  # x86_64
    ioctl=16, personality=135, chroot=161, acct=163, mount=165, umount2=166, swapon=167, swapoff=168,
    reboot=169, sethostname=170, setdomainname=171, init_module=175, delete_module=176,
    quotactl=179, nfsservctl=180, uselib=134, vhangup=153, syslog=103, lookup_dcookie=212,
    clone=56, unshare=272, setns=308, pivot_root=155, keyctl=250, add_key=248, request_key=249,
    bpf=321, perf_event_open=298, userfaultfd=323, kexec_load=246, kexec_file_load=320,
    finit_module=313, name_to_handle_at=303, open_by_handle_at=304, io_uring_setup=425,
    io_uring_enter=426, io_uring_register=427, open_tree=428, move_mount=429, fsopen=430,
    fsconfig=431, fsmount=432, fspick=433, clone3=435, mount_setattr=442, ptrace=101,
    pidfd_open=434, socket=41, clock_settime=227, settimeofday=164, getpid=39,
)
def _arg(a):
    if isinstance(a, bool): return ctypes.c_long(int(a))
    if isinstance(a, int): return ctypes.c_long(a) if a < (1 << 63) else ctypes.c_ulong(a)
    if isinstance(a, str): return ctypes.c_char_p(a.encode())
    if isinstance(a, bytes): return ctypes.c_char_p(a)
    if a is None: return ctypes.c_void_p(None)
    return a
_pylibc = ctypes.PyDLL(None, use_errno=True)   # keeps the GIL: safe for fork-like calls in threaded kernels
_pylibc.syscall.restype = ctypes.c_long
def sc(name, *args, keep_gil=False):
    """Raw syscall: returns [return value, errno name or 'OK']."""
    ctypes.set_errno(0)
    r = (_pylibc if keep_gil else _libc).syscall(ctypes.c_long(NR[name]), *[_arg(a) for a in args])
    e = ctypes.get_errno() if r == -1 else 0
    return [r, errno.errorcode.get(e, str(e)) if e else "OK"]
def ename(e): return errno.errorcode.get(e, str(e)) if e else "OK"
def attempt(fn, *a, **k):
    """['ok', value] | ['err', ERRNO] | ['exc', repr] -- never raises."""
    try: return ["ok", fn(*a, **k)]
    except OSError as ex: return ["err", ename(ex.errno)]
    except Exception as ex: return ["exc", repr(ex)]
def read_text(path, limit=1 << 20):
    with open(path, "rb") as f: return f.read(limit).decode("utf-8", "replace")
def emit(d):
    print("@@VERDICT@@ " + json.dumps(d, default=repr), flush=True)
'''


def wrap_probe(code: str, params: dict) -> str:
    return PRELUDE + f"P = json.loads({json.dumps(params)!r})\n" + code


# ====================================================================== host side


@dataclass
class Identity:
    mode: str            # "root" | "user" | "self" (not running as root)
    pw: pwd.struct_passwd

    @property
    def uid(self):
        return self.pw.pw_uid

    @property
    def gid(self):
        return self.pw.pw_gid

    @property
    def home(self) -> Path:
        return Path(self.pw.pw_dir)

    def prefix(self) -> list[str]:
        return setpriv_prefix(self.pw.pw_name) if self.mode == "user" else []


class HostServices:
    """Loopback listeners on the host that count every contact."""

    def __init__(self, token: str, hidden_dir: Path):
        self.counts = {"tcp": 0, "udp": 0, "abstract": 0, "unix_path": 0}
        self.sel = selectors.DefaultSelector()
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.abstract_name = f"ik-secret-{token}"
        self.abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.abstract.bind("\0" + self.abstract_name)
        self.abstract.listen(16)
        self.unix_path = str(hidden_dir / "service.sock")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        os.chmod(self.unix_path, 0o777)
        self.unix.listen(16)
        for s, kind in ((self.tcp, "tcp"), (self.udp, "udp"), (self.abstract, "abstract"), (self.unix, "unix_path")):
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, kind)
        self._stop = False
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @property
    def tcp_port(self):
        return self.tcp.getsockname()[1]

    @property
    def udp_port(self):
        return self.udp.getsockname()[1]

    def _loop(self):
        while not self._stop:
            for key, _ in self.sel.select(timeout=0.2):
                kind = key.data
                with contextlib.suppress(OSError):
                    if kind == "udp":
                        key.fileobj.recvfrom(65536)
                    else:
                        c, _ = key.fileobj.accept()
                        c.close()
                    with self._lock:
                        self.counts[kind] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self.counts)

    def close(self):
        self._stop = True
        self.thread.join(2)
        for s in (self.tcp, self.udp, self.abstract, self.unix):
            s.close()
        with contextlib.suppress(OSError):
            os.unlink(self.unix_path)


@dataclass
class ModeFiles:
    """Per-caller files: work dir (the sandbox's cwd), runtime dir, ro dir, ..."""
    ident: Identity
    base: Path
    work: Path
    runtime: Path
    private: Path
    rodir: Path
    other_connection_file: Path
    other_key: str


class SecSession:
    def __init__(self):
        self.token = secrets.token_hex(6)
        self.root = Path(tempfile.mkdtemp(prefix="ik-sec-", dir="/tmp"))
        self.root.chmod(0o755)
        self.bindir = self.root / "bin"
        self.bindir.mkdir(mode=0o755)
        # Private copies: others rebuild build/ concurrently.
        self.isolate = self._copy_bin(Path(os.environ.get("ISOLATE_BIN", REPO / "build" / "isolate")))
        self.launcher = self._copy_bin(Path(os.environ.get("IK_LAUNCHER",
                                                           REPO / "build" / "isolated-kernel-launcher")))
        self.driver = self.bindir / "kdriver.py"
        shutil.copy2(KIT / "kdriver.py", self.driver)
        self.driver.chmod(0o644)
        self.jupyter_path = self.root / "jupyter"
        (self.jupyter_path / "kernels").mkdir(parents=True)
        for p in (self.jupyter_path, self.jupyter_path / "kernels"):
            p.chmod(0o755)
        self.secret_env = {
            "JUPYTER_TOKEN": f"ikjt-{self.token}-tok",
            "AWS_SECRET_ACCESS_KEY": f"ikaws-{self.token}-key",
            "IK_SEC_CANARY": f"ikcan-{self.token}-val",
        }
        self.cleanup_paths: list[Path] = []
        # Secrets in the real homes of root and of the test user.
        self.home_secret: dict[str, tuple[Path, str]] = {}
        for pw in self._users():
            p = Path(pw.pw_dir) / f".ik-sec-secret-{self.token}"
            text = f"IKSECRET-home-{pw.pw_name}-{self.token}"
            with contextlib.suppress(OSError):
                p.write_text(text)
                p.chmod(0o600)
                os.chown(p, pw.pw_uid, pw.pw_gid)
                self.home_secret[pw.pw_name] = (p, text)
                self.cleanup_paths.append(p)
        # A private key where TLS keys live on the host (root only can plant it).
        self.ssl_key = None
        if os.geteuid() == 0 and Path("/etc/ssl/private").is_dir():
            self.ssl_key = Path(f"/etc/ssl/private/ik-sec-{self.token}.key")
            self.ssl_key_text = f"IKSECRET-sslkey-{self.token}"
            self.ssl_key.write_text(self.ssl_key_text)
            self.ssl_key.chmod(0o600)
            self.cleanup_paths.append(self.ssl_key)
        # A world-readable entry in the host's /tmp.
        self.tmp_marker = Path(f"/tmp/ik-sec-marker-{self.token}")
        self.tmp_marker_text = f"IKSECRET-tmp-{self.token}"
        self.tmp_marker.write_text(self.tmp_marker_text)
        self.tmp_marker.chmod(0o644)
        self.cleanup_paths.append(self.tmp_marker)
        # A directory of the host that is never mounted (but readable by all).
        self.hidden = self.root / "hidden"
        self.hidden.mkdir(mode=0o755)
        self.hidden.chmod(0o755)
        self.hidden_secret = self.hidden / "secret.txt"
        self.hidden_secret.write_text(f"IKSECRET-hidden-{self.token}")
        self.hidden_secret.chmod(0o644)
        self.services = HostServices(self.token, self.hidden)
        # Host IPC objects: a SysV shared memory segment and a POSIX shm file.
        self.sysv_key = 0x1C5E0000 | random.randrange(0xFFFF)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.sysv_id = self._libc.shmget(self.sysv_key, 4096, 0o1000 | 0o666)   # IPC_CREAT
        self.posix_shm = Path(f"/dev/shm/ik-sec-{self.token}")
        with contextlib.suppress(OSError):
            self.posix_shm.write_text(f"IKSECRET-shm-{self.token}")
            self.posix_shm.chmod(0o666)
            self.cleanup_paths.append(self.posix_shm)
        # Host processes to signal/ptrace: one per uid, marked by a unique argument.
        self.sleep_arg = str(900000 + random.randrange(90000))
        self.sleepers: dict[str, subprocess.Popen] = {}
        for pw in self._users():
            ident = Identity("user" if pw.pw_uid else "root", pw)
            if pw.pw_uid != os.geteuid() and os.geteuid() != 0:
                continue
            self.sleepers[pw.pw_name] = subprocess.Popen(
                ident.prefix() + ["sleep", self.sleep_arg], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.modes: dict[str, ModeFiles] = {}

    def _copy_bin(self, src: Path) -> Path:
        if not (src.is_file() and os.access(src, os.X_OK)):
            pytest.fail(f"{src} missing: cmake --build build --target isolate isolated-kernel-launcher")
        dst = self.bindir / src.name
        shutil.copy2(src, dst)
        dst.chmod(0o755)
        return dst

    def _users(self):
        users = [pwd.getpwuid(0)]
        with contextlib.suppress(KeyError):
            users.append(pwd.getpwnam(TEST_USER))
        if os.geteuid() not in (0,):
            users = [pwd.getpwuid(os.geteuid())]
        return users

    def sleeper_pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.sleepers.items()}

    def identity(self, mode: str) -> Identity:
        try:
            return Identity(*resolve_mode(mode, ensure_test_user(create=False)))
        except LookupError as e:
            pytest.skip(str(e))

    def files(self, mode: str) -> ModeFiles:
        if mode in self.modes:
            return self.modes[mode]
        ident = self.identity(mode)
        base = self.root / ident.mode

        def own(p: Path, m: int):
            p.mkdir(mode=m, exist_ok=True)
            p.chmod(m)
            if os.geteuid() == 0:
                os.chown(p, ident.uid, ident.gid)
        own(base, 0o755)
        work, runtime, private, rodir = base / "work", base / "runtime", base / "private", base / "rodir"
        own(work, 0o755)
        own(runtime, 0o700)
        own(private, 0o700)
        own(rodir, 0o755)
        (rodir / "existing.txt").write_text("original\n")
        other_key = f"ikkey-{secrets.token_hex(8)}"
        other = runtime / f"kernel-other-{self.token}.json"
        other.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1", "shell_port": 1, "iopub_port": 2,
                                     "stdin_port": 3, "control_port": 4, "hb_port": 5, "key": other_key,
                                     "signature_scheme": "hmac-sha256"}))
        other.chmod(0o600)
        if os.geteuid() == 0:
            for p in (rodir / "existing.txt", other):
                os.chown(p, ident.uid, ident.gid)
        mf = ModeFiles(ident, base, work, runtime, private, rodir, other, other_key)
        self.modes[mode] = mf
        return mf

    def close(self):
        self.services.close()
        if self.sysv_id >= 0:
            self._libc.shmctl(self.sysv_id, 0, None)   # IPC_RMID
        for p in self.sleepers.values():
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        for p in self.cleanup_paths:
            with contextlib.suppress(OSError):
                p.unlink()
        kill_quietly(pid for pid, _ in processes_matching([str(self.root)]))
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def sec():
    s = SecSession()
    yield s
    s.close()


# ====================================================================== results


@dataclass
class ProbeResult:
    runner: str
    data: dict | None
    stdout: str
    stderr: str
    returncode: int | None = None      # isolate's exit status
    elapsed: float = 0.0
    kernel: dict = field(default_factory=dict)   # kernel runner: exec reply summary
    pty_pending: dict | None = None

    def __getitem__(self, k):
        return self.data[k]

    def __str__(self):
        return (f"[{self.runner}] exit={self.returncode} elapsed={self.elapsed:.2f}s kernel={self.kernel}\n"
                f"verdict={json.dumps(self.data, indent=1)[:6000]}\n--- stdout\n{self.stdout[-3000:]}\n"
                f"--- stderr\n{self.stderr[-3000:]}")


def parse_verdict(stdout: str):
    for line in reversed(stdout.splitlines()):
        if line.startswith(VERDICT):
            return json.loads(line[len(VERDICT):])
    return None


# ====================================================================== runners


class Ctx:
    """What a probe may know about the host (passed to it as P)."""

    def __init__(self, sec: SecSession, mode: str, kind: str):
        self.sec = sec
        self.kind = kind
        self.files = sec.files(mode)
        self.ident = self.files.ident
        self.mode = self.ident.mode

    def fmt(self, opts) -> list[str]:
        d = {"rodir": self.files.rodir, "work": self.files.work, "home": self.ident.home}
        return [str(o).format(**d) for o in opts]

    def params(self) -> dict:
        s, f, i = self.sec, self.files, self.ident
        other_user = [n for n in s.home_secret if n != i.pw.pw_name]
        return {
            "runner": f"{self.kind}-{self.mode}", "kind": self.kind, "mode": self.mode,
            "uid": i.uid, "gid": i.gid, "home": str(i.home), "user": i.pw.pw_name, "token": s.token,
            "secret_values": list(s.secret_env.values()),
            "secret_names": list(s.secret_env.keys()),
            "own_home_secret": str(s.home_secret[i.pw.pw_name][0]) if i.pw.pw_name in s.home_secret else None,
            "own_home_secret_text": s.home_secret.get(i.pw.pw_name, (None, None))[1],
            "other_home_secrets": [[str(s.home_secret[n][0]), s.home_secret[n][1]] for n in other_user],
            "ssl_key": str(s.ssl_key) if s.ssl_key else None,
            "tmp_marker": str(s.tmp_marker), "tmp_marker_text": s.tmp_marker_text,
            "session_root": str(s.root), "hidden_dir": str(s.hidden), "hidden_secret": str(s.hidden_secret),
            "runtime_dir": str(f.runtime), "other_connection_file": str(f.other_connection_file),
            "other_key": f.other_key, "rodir": str(f.rodir), "work": str(f.work),
            "sleepers": s.sleeper_pids(), "sleep_arg": s.sleep_arg,
            "tcp_port": s.services.tcp_port, "udp_port": s.services.udp_port,
            "abstract_name": s.services.abstract_name, "unix_path": s.services.unix_path,
            "sysv_key": s.sysv_key, "sysv_id": s.sysv_id, "posix_shm": str(s.posix_shm),
        }

    def env(self) -> dict:
        return base_env(self.ident.pw.pw_name, self.ident.home, self.sec.secret_env)


class IsolateRunner:
    kind = "isolate"

    def __init__(self, ctx: Ctx, module_opts):
        self.ctx = ctx
        self.mode = ctx.mode
        self.name = f"isolate-{ctx.mode}"
        self.module_opts = list(module_opts)

    def command(self, code: str, opts=None, params=None, program=None) -> list[str]:
        p = self.ctx.params()
        p.update(params or {})
        prog = program or [PYTHON, "-c", wrap_probe(code, p)]
        opts = self.ctx.fmt(self.module_opts if opts is None else opts)
        return self.ctx.ident.prefix() + [str(self.ctx.sec.isolate), *opts, "--", *prog]

    def probe(self, code: str, opts=None, params=None, timeout=PROBE_TIMEOUT, pty=False,
              expect_verdict=True, program=None, pass_fds=()) -> ProbeResult:
        cmd = self.command(code, opts, params, program)
        master = slave = None
        kw = {}
        if pty:
            master, slave = os.openpty()
            tty.setraw(slave)

            def ctty():  # the pty is the caller's controlling terminal, like a real shell session
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            kw = {"stdin": slave, "preexec_fn": ctty}
        else:
            kw = {"stdin": subprocess.DEVNULL}
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, cwd=self.ctx.files.work, env=self.ctx.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=timeout, start_new_session=True,
                               pass_fds=pass_fds, **kw)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"[{self.name}] timed out after {timeout}s\nstdout: {e.stdout!r}\nstderr: {e.stderr!r}")
        finally:
            pending = None
            if slave is not None:
                pending = pty_pending(slave)
                os.close(slave)
                os.close(master)
        r = ProbeResult(self.name, parse_verdict(p.stdout), p.stdout, p.stderr, p.returncode,
                        time.monotonic() - t0, pty_pending=pending)
        if expect_verdict and r.data is None:
            pytest.fail(f"probe printed no verdict (killed or crashed?)\n{r}")
        return r


def pty_pending(fd: int) -> dict:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    n = int.from_bytes(bytes(buf), sys.byteorder)
    data = b""
    if n:
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError):
            data = os.read(fd, n)
    return {"pending": n, "data": data.decode("latin-1")}


class KernelHandle:
    """One kernel, driven by kdriver.py running as the caller."""

    def __init__(self, ctx: Ctx, opts: list[str], pool=None):
        self.ctx = ctx
        self.opts = opts
        sec = ctx.sec
        h = hashlib.sha1(json.dumps([ctx.mode, opts, bool(pool)]).encode()).hexdigest()[:10]
        self.kernel_name = f"iksec-{h}"
        kdir = sec.jupyter_path / "kernels" / self.kernel_name
        kdir.mkdir(mode=0o755, exist_ok=True)
        kdir.chmod(0o755)
        if pool and "--share-net" in opts:
            pytest.skip("a --share-net tcp kernel binds the host's ports itself: the launcher never pools it "
                        "(docs/pool.md)")
        launcher = pool.argv_prefix(1) if pool else [str(sec.launcher)]
        spec = {"argv": [*launcher, *opts, "--", PYTHON, "-m", "ipykernel_launcher", "-f",
                         "{connection_file}"],
                "display_name": f"iksec {opts}", "language": "python", "interrupt_mode": "signal",
                "metadata": {}}
        (kdir / "kernel.json").write_text(json.dumps(spec, indent=1))
        (kdir / "kernel.json").chmod(0o644)
        f = ctx.files
        self.log = f.private / f"kernel-{h}.log"
        self.log.touch()
        if os.geteuid() == 0:
            os.chown(self.log, ctx.ident.uid, ctx.ident.gid)
        env = ctx.env()
        env.update({
            "JUPYTER_PATH": str(sec.jupyter_path), "JUPYTER_RUNTIME_DIR": str(f.runtime),
            "JUPYTER_CONFIG_DIR": str(f.private / "config"), "JUPYTER_DATA_DIR": str(f.private / "data"),
            "IPYTHONDIR": str(f.private / "ipython"), "TMPDIR": str(f.private),
            "PYTHONDONTWRITEBYTECODE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        })
        claims = None
        if pool:
            # One waiting sandbox of this kernelspec, then its start must claim it.
            daemon = pool.daemon(ctx.ident.mode, ctx.ident.pw)
            env["XDG_RUNTIME_DIR"] = str(daemon.xdg)
            daemon.ensure_ready(spec["argv"], env, f.work, f.runtime, need=1)
            claims = ClaimCheck(daemon)
        self.proc = subprocess.Popen(ctx.ident.prefix() + [PYTHON, str(sec.driver)], cwd=f.work, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(f.private / f"driver-{h}.err", "ab"), text=True,
                                     start_new_session=True)
        self.q: queue.Queue = queue.Queue()
        self.noise: list[str] = []
        threading.Thread(target=self._reader, daemon=True).start()
        self.info = self.request({"op": "start", "kernel": self.kernel_name, "cwd": str(f.work),
                                  "log": str(self.log), "pty": True, "timeout": KERNEL_START_TIMEOUT},
                                 timeout=KERNEL_START_TIMEOUT + 15)
        if not self.info.get("ok"):
            err = self.info.get("error", "")
            self.close()
            pytest.fail(f"kernel {opts} as {ctx.mode} did not start:\n{err}\n--- kernel log\n{self.log_tail()}")
        self.dead = False
        if claims:
            try:
                claims.check(f"pooled kernel {opts} as {ctx.mode}")
            except PoolError as e:
                self.close()
                pytest.fail(str(e))

    def _reader(self):
        for line in self.proc.stdout:
            if line.startswith(DRIVER_PREFIX):
                self.q.put(json.loads(line[len(DRIVER_PREFIX):]))
            else:
                self.noise.append(line)
        self.q.put(None)

    def request(self, req: dict, timeout: float) -> dict:
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            return {"ok": False, "error": "driver is gone"}
        try:
            r = self.q.get(timeout=timeout)
        except queue.Empty:
            return {"ok": False, "error": f"driver did not answer {req.get('op')} within {timeout}s"}
        return r if r is not None else {"ok": False, "error": "driver exited"}

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-4000:]
        return ""

    def alive(self) -> dict:
        return self.request({"op": "alive"}, timeout=10)

    def close(self):
        with contextlib.suppress(Exception):
            if self.proc.poll() is None:
                self.request({"op": "stop"}, timeout=20)
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        # Anything left of this kernel: its launcher and kernel name its connection file.
        cf = (getattr(self, "info", None) or {}).get("connection_file")
        if cf:
            kill_quietly(pid for pid, _ in processes_matching([cf]))


class KernelPool:
    """The module's kernels (one per mode, options and cold/pooled), reused by its probes."""

    def __init__(self, sec: SecSession):
        self.sec = sec
        self.kernels: dict[tuple, KernelHandle] = {}

    def get(self, ctx: Ctx, opts: list[str], fresh=False, pool=None) -> KernelHandle:
        key = (ctx.mode, tuple(opts), bool(pool))
        k = self.kernels.get(key)
        if k is not None and (fresh or k.dead):
            k.close()
            k = None
        if k is None:
            k = KernelHandle(ctx, opts, pool)
            self.kernels[key] = k
        return k

    def close(self):
        for k in self.kernels.values():
            k.close()
        self.kernels.clear()


@pytest.fixture(scope="module")
def kernel_pool(sec):
    pool = KernelPool(sec)
    yield pool
    pool.close()


class KernelRunner:
    kind = "kernel"

    def __init__(self, ctx: Ctx, module_opts, pool: KernelPool, warm=None):
        self.ctx = ctx
        self.mode = ctx.mode
        self.name = f"{'pooled' if warm else 'kernel'}-{ctx.mode}"
        self.module_opts = list(module_opts)
        self.pool = pool
        self.warm = warm   # kit/pool.py PoolKit: pooled kernels

    def kernel(self, opts=None, fresh=False) -> KernelHandle:
        return self.pool.get(self.ctx, self.ctx.fmt(self.module_opts if opts is None else opts), fresh=fresh,
                             pool=self.warm)

    def probe(self, code: str, opts=None, params=None, timeout=PROBE_TIMEOUT, pty=False,
              expect_verdict=True, allow_death=False, fresh=False) -> ProbeResult:
        k = self.kernel(opts, fresh)
        p = self.ctx.params()
        p.update(params or {})
        src = wrap_probe(code, p)
        cell = f"exec(compile({src!r}, '<probe>', 'exec'), {{'__name__': '__probe__'}})"
        t0 = time.monotonic()
        rep = k.request({"op": "exec", "code": cell, "timeout": timeout}, timeout=timeout + 15)
        elapsed = time.monotonic() - t0
        pending = None
        if pty:
            pending = k.request({"op": "pty_pending"}, timeout=10)
            pending = {"pending": pending.get("pending"), "data": pending.get("data")}
        summary = {key: rep.get(key) for key in ("ok", "error", "timeout", "died", "alive", "errors")}
        if rep.get("reply"):
            summary["status"] = rep["reply"].get("status")
            summary["ename"] = rep["reply"].get("ename")
            summary["evalue"] = rep["reply"].get("evalue")
        r = ProbeResult(self.name, parse_verdict(rep.get("stdout", "")), rep.get("stdout", ""),
                        rep.get("stderr", "") + "\n--- kernel log\n" + k.log_tail(), None, elapsed,
                        kernel=summary, pty_pending=pending)
        if not rep.get("alive", False) or rep.get("died"):
            k.dead = True
            if not allow_death:
                pytest.fail(f"the kernel died while running the probe\n{r}")
        if rep.get("timeout"):
            k.dead = True  # still busy: do not reuse
        if expect_verdict and r.data is None:
            pytest.fail(f"probe printed no verdict\n{r}")
        return r


@pytest.fixture(params=RUNNERS)
def runner(request, sec):
    kind, mode = request.param.split("-")
    ctx = Ctx(sec, mode, "isolate" if kind == "isolate" else "kernel")
    opts = getattr(request.module, "SANDBOX_OPTS", [])
    if kind == "isolate":
        return IsolateRunner(ctx, opts)
    warm = request.getfixturevalue("ik_session").pool if kind == "pooled" else None
    return KernelRunner(ctx, opts, request.getfixturevalue("kernel_pool"), warm)


# ====================================================================== assertions


def assert_errno(result, expected, what=""):
    """result is [ret, ERRNO] from sc() or ['err', ERRNO] from attempt()."""
    exp = {expected} if isinstance(expected, str) else set(expected)
    assert result[1] in exp, f"{what}: expected failure with {sorted(exp)}, got {result}"
