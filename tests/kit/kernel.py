"""The launcher kit (isolated-kernel-launcher driven by real Jupyter clients): the
`ik_session` and `khost` fixtures and the client-side scenario helpers
(test_kernel*.py, and kit/security.py's kernels).

Every client-side check runs in a separate client process ("scenario"), as
root or as the unprivileged test user (through setpriv, like kit/isolate.py's
`sb` fixture), so that the launcher jupyter_client starts runs with the
caller's privileges. A scenario is a function in a test module registered
with @scenario; the test module doubles as the client script:

    /usr/bin/python3 test_kernel.py --ik-scenario NAME ARGS_JSON RESULT_FILE

(run from a session copy of the module next to a copy of kit/, readable by
the test user; see copy_scripts).

The client writes what it observed to RESULT_FILE as JSON; pytest asserts on
it, and checks the host afterwards (leftover processes, files, mounts).

Environment:
  IK_LAUNCHER   the launcher under test (default: <repo>/build/isolated-kernel-launcher)
  IK_TEST_USER  the unprivileged user (default: iktest)
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from kit.common import (KIT, PYTHON, REPO, base_env, ensure_test_user, kill_quietly, merge_env, processes_matching,
                        resolve_mode, setpriv_prefix, wait_until)
from kit.pool import ClaimCheck, PoolKit, install_client_wait

KERNEL = "isolated-test"              # what a user would write: launcher -- python -m ipykernel_launcher
KERNEL_PROBE = "isolated-test-probe"  # the same plus --keep-env IK_PROBE_PORT (for the notebooks)
START_TIMEOUT = 60                    # kernel start, generous: 2 slow cores
CLIENT_TIMEOUT = 240                  # a whole client process
TESTS_DIR = KIT.parent / "integration"
# The test modules that double as client scripts; they run from a session copy
# next to a copy of kit/, so `from kit.kernel import ...` works there as here.
SCRIPTS = ("test_kernel.py", "test_kernel_clients.py", "test_kernel_stdio.py", "test_kernel_lifecycle.py",
           "test_kernel_transports.py", "test_kernel_sameness.py", "test_pool.py", "test_pool_cost.py",
           "test_pool_nbconvert.py")


def default_launcher() -> Path:
    return Path(os.environ.get("IK_LAUNCHER", REPO / "build" / "isolated-kernel-launcher")).absolute()


def kernel_argv(launcher: Path | str, *opts: str) -> list[str]:
    return [str(launcher), *opts, "--", PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def is_kernel(cmdline: str) -> bool:
    """CMDLINE (processes_matching's, spaces for NULs) is a kernel's own, cold or
    pooled (a pooled kernel's reads as the cold one's), not its launcher's."""
    return cmdline.startswith(f"{PYTHON} -m ipykernel_launcher ")


# Pool sizes of the pooled test kernelspecs: KERNEL_PROBE runs the three
# example notebooks in one nbconvert, one kernel each.
POOL_SIZES = {KERNEL: 2, KERNEL_PROBE: 3}


def write_kernelspecs(jupyter_dir: Path, launcher: Path | str, pool: PoolKit | None = None) -> Path:
    """Writes the test kernelspecs under JUPYTER_DIR/kernels; returns JUPYTER_DIR.
    With POOL (kit/pool.py): pooled kernelspecs of the pool's launcher copy."""
    specs = {
        KERNEL: ([], "Python 3 (isolated, test)"),
        KERNEL_PROBE: (["--keep-env", "IK_PROBE_PORT"], "Python 3 (isolated, probe port)"),
    }
    for name, (opts, display) in specs.items():
        d = jupyter_dir / "kernels" / name
        d.mkdir(parents=True, exist_ok=True)
        argv = kernel_argv(launcher, *opts) if pool is None else \
            [*pool.argv_prefix(POOL_SIZES[name]), *kernel_argv("", *opts)[1:]]
        spec = {"argv": argv, "display_name": display,
                "language": "python", "interrupt_mode": "signal", "metadata": {}}
        (d / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
    for p in [jupyter_dir, *jupyter_dir.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return jupyter_dir


# --------------------------------------------------------------- session


@dataclass
class IkSession:
    root: Path                 # world-traversable scratch dir (0755)
    launcher: Path             # a session-private copy: its path marks our processes
    jupyter_path: Path         # JUPYTER_PATH with the test kernelspecs
    scripts: Path              # directory holding the client scripts (readable by the test user)
    test_user: pwd.struct_passwd | None
    pool: PoolKit | None = None        # the pool launcher and daemons (kit/pool.py)
    pooled_jupyter_path: Path | None = None  # the same kernelspecs, pooled


def copy_scripts(root: Path) -> Path:
    """ROOT/scripts: the client scripts and kit/, readable by the test user (a 0700 work tree is not)."""
    scripts = root / "scripts"
    shutil.copytree(KIT, scripts / "kit", ignore=shutil.ignore_patterns("__pycache__"))
    for s in SCRIPTS:
        if (TESTS_DIR / s).exists():
            shutil.copy2(TESTS_DIR / s, scripts / s)
    for p in [scripts, *scripts.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return scripts


@pytest.fixture(scope="session")
def ik_session():
    src = default_launcher()
    if not (src.is_file() and os.access(src, os.X_OK)):
        pytest.fail(f"launcher not found at {src}: build it with `cmake -S . -B build -DIK_BUILD_TESTS=OFF && "
                    "cmake --build build --target isolated-kernel-launcher` or set IK_LAUNCHER")
    test_user = ensure_test_user()
    root = Path(tempfile.mkdtemp(prefix="ik-kt-", dir="/tmp"))
    root.chmod(0o755)
    bindir = root / "bin"
    bindir.mkdir(mode=0o755)
    launcher = bindir / "isolated-kernel-launcher"
    shutil.copy2(src, launcher)
    launcher.chmod(0o755)
    jupyter_path = write_kernelspecs(root / "jupyter", launcher)
    scripts = copy_scripts(root)
    pool = PoolKit(root, src.parent)
    pooled = write_kernelspecs(root / "jupyter-pooled", pool.launcher, pool)
    yield IkSession(root, launcher, jupyter_path, scripts, test_user, pool, pooled)
    pool.close()
    leftovers = processes_matching([str(root)])
    kill_quietly(p for p, _ in leftovers)
    shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------- per test


@dataclass
class Completed:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    def __str__(self) -> str:
        return (f"$ {' '.join(map(str, self.args))}\n-> exit {self.returncode} after {self.elapsed:.1f}s\n"
                f"--- stdout\n{self.stdout[-6000:]}\n--- stderr\n{self.stderr[-6000:]}")


class ScenarioResult:
    def __init__(self, name: str, data: dict, run: Completed, leftovers: list):
        self.name = name
        self.data = data
        self.run = run
        self.leftovers = leftovers   # processes still alive 5 s after the client exited

    def context(self) -> str:
        err = self.data.get("_error", "")
        return (f"scenario {self.name}: client exit {self.run.returncode}\n"
                + (f"--- scenario error\n{err}\n" if err else "")
                + f"--- client stderr (tail)\n{self.run.stderr[-4000:]}")

    def step(self, name: str) -> dict:
        s = self.data.get(name)
        if s is None:
            pytest.fail(f"step {name!r} never ran\n{self.context()}")
        if "error" in s:
            pytest.fail(f"step {name!r} raised in the client:\n{s['error']}\n{self.context()}")
        return s

    def __getitem__(self, name):
        return self.step(name)


class KernelHost:
    """One test's view: who runs the clients and where their files live. A
    pooled host (kind "pooled") finds pooled kernelspecs under the same names
    and talks to its user's session pool daemon (kit/pool.py)."""

    def __init__(self, mode: str, pw: pwd.struct_passwd, session: IkSession, base: Path, kind: str = "cold"):
        self.mode = mode
        self.kind = kind
        self.pooled = kind == "pooled"
        self.daemon = session.pool.daemon(mode, pw) if self.pooled else None
        self.claims: ClaimCheck | None = None
        self.pw = pw
        self.user = pw.pw_name
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.home = Path(pw.pw_dir)
        self.session = session
        self.launcher = session.launcher
        self.base = base                      # root of this test's files (marks its processes)
        self.token = uuid.uuid4().hex[:12]
        self.workdir = self.mkdir(base / "work")            # the kernel's cwd
        self.runtime = self.mkdir(base / "runtime", 0o700)  # JUPYTER_RUNTIME_DIR
        self.private = self.mkdir(base / "private", 0o700)  # client scratch: results, TMPDIR, config
        self._cleanup: list[Path] = []

    # -- files owned by the caller ------------------------------------------
    def chown(self, path: Path) -> Path:
        if os.geteuid() == 0:
            os.lchown(path, self.uid, self.gid)
        return path

    def mkdir(self, path: Path, mode: int = 0o755) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        return self.chown(path)

    def write(self, path: Path, text: str, mode: int = 0o644) -> Path:
        path.write_text(text)
        path.chmod(mode)
        return self.chown(path)

    def home_secret(self) -> Path:
        """A private file in the caller's real HOME, removed after the test."""
        p = self.home / f".ik-secret-{self.token}"
        self.write(p, f"secret {self.token}\n", 0o600)
        self._cleanup.append(p)
        return p

    def connection_file(self) -> Path:
        return self.runtime / f"kernel-{uuid.uuid4()}.json"

    # -- running as the caller ------------------------------------------------
    def prefix(self) -> list[str]:
        return setpriv_prefix(self.user) if self.mode == "user" else []

    def env(self, extra: dict | None = None) -> dict:
        e = base_env(self.user, self.home, {
            "JUPYTER_PATH": str(self.session.pooled_jupyter_path if self.pooled else self.session.jupyter_path),
            "JUPYTER_RUNTIME_DIR": str(self.runtime),
            "JUPYTER_CONFIG_DIR": str(self.private / "config"),
            "JUPYTER_DATA_DIR": str(self.private / "data"),
            "IPYTHONDIR": str(self.private / "ipython"),
            "TMPDIR": str(self.private),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "IK_LAUNCHER": str(self.launcher),
            "IK_TEST_TOKEN": self.token,
        })
        if self.pooled:
            e["XDG_RUNTIME_DIR"] = str(self.daemon.xdg)
            e["IK_POOL_BIN"] = str(self.session.pool.ik)   # the client waits for a refill (kit/pool.py)
        return merge_env(e, extra)

    # -- pooled kernels -----------------------------------------------------------
    def spec_argv(self, name: str = KERNEL) -> list[str]:
        return json.loads((Path(self.env()["JUPYTER_PATH"].split(":")[0]) / "kernels" / name / "kernel.json")
                          .read_text())["argv"]

    def pool_ready(self, *names: str, env: dict | None = None):
        """Pooled host: waits until the pools of kernelspecs NAMES (default the
        test kernelspec) have a sandbox waiting (KERNEL_PROBE: one per example
        notebook; nbconvert's starts do not wait), then counts claims
        from here on (check_claims). ENV: what the test adds to the clients'
        environment (a kept variable is part of the pool key). Cold: nothing."""
        if not self.pooled:
            return
        for name in names or (KERNEL,):
            self.daemon.ensure_ready(self.spec_argv(name), self.env(env), self.workdir, self.runtime,
                                     need=POOL_SIZES[name] if name == KERNEL_PROBE else 1)
        self.claims = ClaimCheck(self.daemon)

    def kernelspec_argv(self, *opts: str, size: int = 1) -> list[str]:
        """The argv of a kernelspec of this host's kind with launcher OPTS, for a
        test that writes kernelspecs of its own: cold, the session's launcher
        copy; pooled, the pool launcher with a pool of SIZE (pool_ready_argv)."""
        if self.pooled:
            return [*self.session.pool.argv_prefix(size), *kernel_argv("", *opts)[1:]]
        return kernel_argv(self.launcher, *opts)

    def pool_ready_argv(self, *argvs: list[str], env: dict | None = None):
        """Pooled host: pool_ready for kernelspec_argv()s of the test's own (each
        pool registered and a sandbox waiting), then claims are counted from here
        on. ENV: what the test adds to the clients' environment. Cold: nothing."""
        if not self.pooled:
            return
        for argv in argvs:
            self.daemon.ensure_ready(argv, self.env(env), self.workdir, self.runtime, need=1)
        self.claims = ClaimCheck(self.daemon)

    def check_claims(self, min_claims: int = 1):
        """Pooled host: every kernel start since pool_ready got a waiting sandbox."""
        if self.pooled and self.claims is not None:
            claims, self.claims = self.claims, None   # once: a test may check before the fixture does
            claims.check(f"{self.kind} {self.mode}", min_claims)

    def run(self, args, cwd=None, env=None, input=None, timeout=CLIENT_TIMEOUT) -> Completed:
        cmd = self.prefix() + [str(a) for a in args]
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, cwd=cwd or self.workdir, env=self.env(env), text=True,
                             stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            self.kill_leftovers()
            pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n--- stdout\n{out[-4000:]}\n"
                        f"--- stderr\n{err[-4000:]}")
        return Completed(cmd, p.returncode, out, err, time.monotonic() - t0)

    def scenario(self, module_file: str, name: str, timeout=CLIENT_TIMEOUT, env=None, **args) -> ScenarioResult:
        script = self.session.scripts / Path(module_file).name
        result = self.private / f"result-{name}-{uuid.uuid4().hex[:6]}.json"
        run = self.run([PYTHON, script, "--ik-scenario", name, json.dumps(args), result],
                       env=env, timeout=timeout)
        try:
            data = json.loads(result.read_text())
        except (OSError, ValueError) as e:
            pytest.fail(f"scenario {name} wrote no result ({e})\n{run}")
        leftovers = self.leftovers(grace=5.0)
        self.kill_leftovers()
        return ScenarioResult(name, data, run, leftovers)

    # -- leftovers --------------------------------------------------------------
    def markers(self) -> list[str]:
        return [str(self.base), str(self.launcher)]

    def leftovers(self, grace: float = 0.0) -> list[tuple[int, str]]:
        """Our processes (launcher copy, kernels with our connection files) still alive after GRACE s.
        Pooled: also the claimed kernels whose helper still runs (the helper's and its sandbox
        init's command lines name nothing of this test; the count is what can be checked)."""
        def left():
            return processes_matching(self.markers()) + (self.daemon.claimed_still_running() if self.pooled else [])
        if grace:
            wait_until(lambda: not left(), grace)
        return left()

    def kill_leftovers(self):
        kill_quietly(p for p, _ in processes_matching(self.markers()))

    def close(self):
        self.kill_leftovers()
        for p in self._cleanup:
            with contextlib.suppress(OSError):
                p.unlink()


# The kernel fixtures' parameters: mode, then "-pooled" for a pooled kernel.
HOST_PARAMS = ["root", "user", "root-pooled", "user-pooled"]


def _make_host(request, session: IkSession, mode: str) -> KernelHost:
    """MODE: "root" | "user", with "-pooled" for a pooled host."""
    mode, _, pooled = mode.partition("-")
    try:
        real_mode, pw = resolve_mode(mode, session.test_user)
    except LookupError as e:
        pytest.skip(str(e))
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    base = Path(tempfile.mkdtemp(prefix=f"{real_mode}-{safe}-", dir=session.root))
    base.chmod(0o755)
    return KernelHost(real_mode, pw, session, base, pooled or "cold")


@pytest.fixture(params=HOST_PARAMS)
def khost(request, ik_session):
    """A KernelHost for one test: as root and as the test user, each with a
    cold and with a pooled kernel. A pooled run fails unless every kernel start
    of the test claimed a waiting sandbox. Tests that start no kernel through
    a kernelspec are marked @pytest.mark.cold_only (conftest drops their
    pooled runs)."""
    h = _make_host(request, ik_session, request.param)
    h.pool_ready()
    yield h
    try:
        if request.node.rep_call.passed if hasattr(request.node, "rep_call") else True:
            h.check_claims()
    finally:
        h.close()


# --------------------------------------------------------------- client side


SCENARIOS: dict = {}


def scenario(fn):
    """Registers a client-side scenario: fn(out: dict, **args); fills OUT with observations."""
    SCENARIOS[fn.__name__] = fn
    return fn


@contextlib.contextmanager
def step(out: dict, name: str):
    """Records one step's observations in OUT[name]; an exception is recorded, not raised."""
    s = out.setdefault(name, {})
    try:
        yield s
    except Exception:
        s["error"] = traceback.format_exc()


def scenario_main(argv=None) -> None:
    """Entry point of a test module run as a client script."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 4 or argv[0] != "--ik-scenario":
        sys.exit("usage: MODULE --ik-scenario NAME ARGS_JSON RESULT_FILE")
    name, args, result = argv[1], json.loads(argv[2]), Path(argv[3])
    install_client_wait()
    out: dict = {}
    try:
        SCENARIOS[name](out, **args)
    except Exception:
        out["_error"] = traceback.format_exc()
    tmp = result.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1, default=str))
    tmp.rename(result)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # do not run jupyter_client finalizers after a failure


def new_connection_file() -> str:
    return os.path.join(os.environ["JUPYTER_RUNTIME_DIR"], f"kernel-{uuid.uuid4()}.json")


def start_kernel(kernel_name: str = KERNEL, cwd: str | None = None, connection_file: str | None = None):
    """KernelManager + started BlockingKernelClient, ready. Returns (km, kc)."""
    from jupyter_client.manager import KernelManager
    # shutdown_wait_time: jupyter_client sends SIGTERM after half of it (default
    # 5 s); the tests check that shutdown_request alone ends the kernel, so do
    # not let a loaded machine turn a slow clean exit into a SIGTERM.
    km = KernelManager(kernel_name=kernel_name, connection_file=connection_file or new_connection_file(),
                       shutdown_wait_time=20)
    km.start_kernel(cwd=cwd or os.getcwd())
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=START_TIMEOUT)
    except Exception:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        raise
    return km, kc


def stop_kernel(km, kc, now: bool = False):
    with contextlib.suppress(Exception):
        kc.stop_channels()
    km.shutdown_kernel(now=now)


class Cell:
    """One execute_request and everything the kernel sends back for it."""

    def __init__(self, kc, code: str, stdin=(), allow_stdin: bool | None = None, **kw):
        self.kc = kc
        self.code = code
        self.stdin = list(stdin)
        self.allow_stdin = bool(self.stdin) if allow_stdin is None else allow_stdin
        self.msg_id = kc.execute(code, allow_stdin=self.allow_stdin, **kw)
        self.reply = None
        self.idle = False
        self.outputs: list[dict] = []      # iopub messages with this request as parent
        self.input_requests: list[dict] = []

    @property
    def done(self) -> bool:
        return self.reply is not None and self.idle

    def text(self, name: str = "stdout") -> str:
        return "".join(m["content"]["text"] for m in self.outputs
                       if m["msg_type"] == "stream" and m["content"]["name"] == name)

    def pump(self, timeout: float = 30, until=None) -> "Cell":
        deadline = time.monotonic() + timeout
        while not self.done and not (until and until(self)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete answer within {timeout}s to {self.code!r}: {self.summary()}")
            self._poll()
        return self

    def _poll(self):
        kc = self.kc
        if self.allow_stdin:
            with contextlib.suppress(queue.Empty):
                m = kc.get_stdin_msg(timeout=0.01)
                if m["msg_type"] == "input_request":
                    self.input_requests.append(m["content"])
                    kc.input(self.stdin.pop(0) if self.stdin else "")
        if self.reply is None:
            with contextlib.suppress(queue.Empty):
                m = kc.get_shell_msg(timeout=0.01)
                if m["parent_header"].get("msg_id") == self.msg_id:
                    self.reply = m["content"]
        with contextlib.suppress(queue.Empty):
            m = kc.get_iopub_msg(timeout=0.03)
            if m["parent_header"].get("msg_id") == self.msg_id:
                if m["msg_type"] == "status":
                    self.idle = self.idle or m["content"]["execution_state"] == "idle"
                elif m["msg_type"] != "execute_input":
                    self.outputs.append({"msg_type": m["msg_type"], "content": m["content"]})

    def summary(self) -> dict:
        return {"code": self.code, "msg_id": self.msg_id, "reply": self.reply, "idle": self.idle,
                "outputs": self.outputs,
                "stdout": self.text("stdout"), "stderr": self.text("stderr"),
                "input_requests": self.input_requests}


def run_cell(kc, code: str, timeout: float = 30, **kw) -> dict:
    return Cell(kc, code, **kw).pump(timeout).summary()


def drain_iopub(kc, seconds: float = 1.0) -> list[dict]:
    """Every iopub message that arrives within SECONDS (any parent)."""
    msgs = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            m = kc.get_iopub_msg(timeout=0.05)
            msgs.append({"msg_type": m["msg_type"], "parent": m["parent_header"].get("msg_id"),
                         "content": m["content"]})
    return msgs


def eval_json(kc, code: str, timeout: float = 30):
    """Runs CODE that prints one JSON document as its last stdout line; returns it."""
    r = run_cell(kc, code, timeout)
    if r["reply"]["status"] != "ok":
        raise RuntimeError(f"probe failed in the kernel: {r['reply'].get('ename')}: "
                           f"{r['reply'].get('evalue')}\n" + "\n".join(r["reply"].get("traceback", [])))
    return json.loads(r["stdout"].strip().splitlines()[-1])
