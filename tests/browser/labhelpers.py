"""Shared parts of the JupyterLab tests (test_jupyterlab.py in a browser,
test_services_client.py with @jupyterlab/services in Node).

- the JupyterLab test application (tests/browser/jupyterlab/) is built once
  per session by its build.sh, which does nothing when build/.stamp is current;
- a jupyter_server (the app's LabServerApp, or plain jupyter_server for the
  Node client) runs as root or as the unprivileged test user, with an isolated
  kernelspec installed by `isolated-kernel install --prefix` where only this
  server looks;
- Chromium and chromedriver run as the same user as the server.

The per-user Jupyter world (HOME, JUPYTER_* dirs, setpriv, private mount
namespace for root) comes from tests/integration/ikcli.py, like the classic
Notebook test (tests/integration/test_notebook_browser.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from ikcli import (PYTHON, REPO, Jupyter, Tools, get_tools, make_jupyter,  # noqa: E402
                   processes_matching, setpriv_prefix)

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
    """The built JupyterLab app (build.sh: a no-op when the build is current)."""
    r = subprocess.run([str(APP / "build.sh")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=BUILD_TIMEOUT)
    if r.returncode == 3:
        pytest.skip(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0, f"building the JupyterLab app failed:\n{r.stdout[-5000:]}"
    return APP


def user_can_read(user: str, *paths: Path) -> bool:
    script = 'for p; do test -r "$p" || exit 1; done'
    r = subprocess.run(setpriv_prefix(user) + ["/bin/sh", "-c", script, "sh", *map(str, paths)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


def app_for(j: Jupyter, tools: Tools, app: Path, with_node_modules: bool = False) -> Path:
    """APP, or a copy readable by J's user when the work tree is not (a 0700 home)."""
    probe = [app / "labapp.py", app / "build" / "bundle.js", app / "templates" / "index.html"]
    if with_node_modules:
        probe.append(app / "node_modules" / "@jupyterlab" / "services" / "package.json")
    if j.mode != "user" or user_can_read(j.user, *probe):
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A jupyter_server run as J's user: the lab app (labapp.py) or plain jupyter_server."""

    def __init__(self, j: Jupyter, argv0: list[str], nbdir: Path, jupyter_path: Path):
        self.j = j
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = j.base / "server.log"
        args = [*argv0, "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                f"--ServerApp.token={self.token}", "--ServerApp.open_browser=False",
                f"--ServerApp.root_dir={nbdir}"]
        if j.mode == "root":
            args.append("--allow-root")
        # A TMPDIR of its own: the tests check it is empty at the end (the host's /tmp
        # is shared with whatever else runs as the same user).
        self.tmpdir = j.mkdir(j.base / "tmp", 0o700)
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(j.argv(args), cwd=nbdir,
                                     env=j.env({"JUPYTER_PATH": jupyter_path, "TMPDIR": self.tmpdir}),
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


def wait_until(pred, timeout: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # element not there yet, page loading...
            last = e
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


@pytest.fixture(scope="session")
def tools() -> Tools:
    try:
        return get_tools()
    except FileNotFoundError as e:
        pytest.fail(str(e))


def jupyter_for(mode: str, tools: Tools, name: str) -> Jupyter:
    try:
        return make_jupyter(mode, tools, name)
    except LookupError as e:
        pytest.skip(str(e))



