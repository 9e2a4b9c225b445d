"""The browser kit: Jupyter web servers (JupyterLab's LabServerApp, plain
jupyter_server, the classic Notebook 6) and headless Chromium, driven as root
or as the test user (tests/browser/: test_jupyterlab.py in a browser,
test_services_client.py with @jupyterlab/services in Node,
test_notebook_browser.py with the classic Notebook).

- the JupyterLab test application (tests/browser/jupyterlab/) is built once
  per session by its build.sh, which does nothing when build/.stamp is current;
- a server runs as root or as the unprivileged test user, with an isolated
  kernelspec installed by `isolated-kernel install --prefix` where only this
  server looks;
- Chromium and chromedriver run as the same user as the server.

The per-user Jupyter world (HOME, JUPYTER_* dirs, setpriv, private mount
namespace for root) is the `isolated-kernel` kit's (kit/cli.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kit.cli import Jupyter, Tools, make_jupyter
from kit.common import PYTHON, REPO, TESTS, free_port, processes_matching, user_can

HERE = TESTS / "browser"
APP = HERE / "jupyterlab"
ARTIFACTS = REPO / "test-artifacts"
NAME = "python3-isolated"
DISPLAY = "Python 3 (isolated)"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
BUILD_TIMEOUT = 1800


def missing_server() -> str | None:
    r = subprocess.run([PYTHON, "-c", "import jupyterlab_server, jupyter_server"], capture_output=True)
    if r.returncode != 0:
        return ("python3-jupyterlab-server / python3-jupyter-server not installed "
                "(scripts/install-deps installs them)")
    return None


def missing_browser() -> str | None:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return "chromium / chromium-driver not installed (scripts/install-deps installs them)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "python3-selenium not installed (scripts/install-deps installs it)"
    return None


# --------------------------------------------------------------- the app


@pytest.fixture(scope="session")
def lab_app() -> Path:
    """The built JupyterLab app (build.sh: a no-op when the build is current). One build at
    a time: the pytest-xdist workers (scripts/test) each have this session fixture."""
    tree = hashlib.sha256(str(APP).encode()).hexdigest()[:12]
    with open(f"/tmp/.ik-lab-build-{tree}-{os.getuid()}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run([str(APP / "build.sh")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=BUILD_TIMEOUT)
    if r.returncode == 3:
        pytest.skip(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0, f"building the JupyterLab app failed:\n{r.stdout[-5000:]}"
    return APP


def app_for(j: Jupyter, tools: Tools, app: Path, with_node_modules: bool = False) -> Path:
    """APP, or a copy readable by J's user when the work tree is not (a 0700 home)."""
    probe = [app / "labapp.py", app / "build" / "bundle.js", app / "templates" / "index.html"]
    if with_node_modules:
        probe.append(app / "node_modules" / "@jupyterlab" / "services" / "package.json")
    if j.mode != "user" or user_can(j.user, "-r", *probe):
        return app
    copy = tools.root / "jupyterlab-app"
    if not (copy / ".complete").exists() or (with_node_modules and not (copy / "node_modules").exists()):
        shutil.rmtree(copy, ignore_errors=True)
        ignore = None if with_node_modules else shutil.ignore_patterns("node_modules")
        shutil.copytree(app, copy, ignore=ignore, symlinks=True)
        for p in [copy, *copy.rglob("*")]:
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() or os.access(p, os.X_OK) else 0o644)
        (copy / ".complete").touch()
    return copy


# --------------------------------------------------------------- the server


class Server:
    """A Jupyter web server run as J's user, serving NBDIR with JUPYTER_PATH: APP "server" is a
    jupyter_server application started by ARGV0 (the lab app's labapp.py, or `-m jupyter_server`),
    with a TMPDIR of its own; APP "notebook" is the classic Notebook 6 (`-m notebook`)."""

    def __init__(self, j: Jupyter, argv0: list[str], nbdir: Path, jupyter_path: Path, app: str = "server"):
        self.j = j
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = j.base / "server.log"
        env = {"JUPYTER_PATH": jupyter_path}
        if app == "notebook":
            args = [*argv0, "--no-browser", "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
                    f"--NotebookApp.token={self.token}", f"--notebook-dir={nbdir}",
                    "--NotebookApp.open_browser=False"]
            self.tmpdir = None
        else:
            args = [*argv0, "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                    "--ServerApp.port_retries=0", f"--ServerApp.token={self.token}",
                    "--ServerApp.open_browser=False", f"--ServerApp.root_dir={nbdir}"]
            # A TMPDIR of its own: the tests check it is empty at the end (the host's /tmp
            # is shared with whatever else runs as the same user).
            self.tmpdir = j.mkdir(j.base / "tmp", 0o700)
            env["TMPDIR"] = self.tmpdir
        if j.mode == "root":
            args.append("--allow-root")
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(j.argv(args), cwd=nbdir, env=j.env(env),
                                     stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 10):
        req = urllib.request.Request(self.url(path), method=method, data=b"" if method != "GET" else None)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            return json.loads(body) if body else None

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, b""

    def http_get(self, path: str, timeout: float = 5) -> tuple[int, str, bytes]:
        """(status, Content-Type, body) of GET PATH."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as resp:
                return resp.status, resp.headers.get("Content-Type", ""), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, "", b""

    def wait_ready(self, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter server exited {self.proc.returncode}\n{self.text_log()}")
            with contextlib.suppress(OSError, ValueError):
                if self.api("api/kernelspecs", timeout=2) is not None:
                    return
            time.sleep(0.3)
        raise AssertionError(f"jupyter server not ready after {timeout}s\n{self.text_log()}")

    def mountinfo(self) -> set[str]:
        """The mount table of the server's mount namespace (where the launchers run)."""
        with open(f"/proc/{self.proc.pid}/mountinfo") as f:
            return set(f.read().splitlines())

    def text_log(self) -> str:
        self.logf.flush()
        return self.log.read_text()[-8000:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.api("api/shutdown", method="POST", timeout=5)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.logf.close()
        return self.proc.returncode


def install_kernelspec(j: Jupyter) -> Path:
    """`isolated-kernel install --prefix`: returns the JUPYTER_PATH entry holding it."""
    prefix = j.mkdir(j.base / "kprefix")
    r = j.ik("install", "--prefix", prefix)
    assert r.returncode == 0, str(r)
    jupyter_path = prefix / "share" / "jupyter"
    assert (jupyter_path / "kernels" / NAME / "kernel.json").is_file(), str(r)
    return jupyter_path


def launchers(tools: Tools, j: Jupyter) -> list[tuple[int, str]]:
    """Our isolated-kernel-launcher processes started for J (the connection file is under J.base)."""
    return [(pid, cmd) for pid, cmd in processes_matching([str(j.base)]) if str(tools.launcher) in cmd]


def make_driver(profile: Path, window: str = "1280,900", driver_bin: str | None = None,
                service_env: dict | None = None):
    """Headless Chromium through chromedriver (DRIVER_BIN: a wrapper that runs it as another user)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={window}"):
        opts.add_argument(flag)
    kw = {"env": service_env} if service_env is not None else {}
    return webdriver.Chrome(service=Service(executable_path=driver_bin or CHROMEDRIVER, **kw), options=opts)


def jupyter_for(mode: str, tools: Tools, name: str) -> Jupyter:
    try:
        return make_jupyter(mode, tools, name)
    except LookupError as e:
        pytest.skip(str(e))
