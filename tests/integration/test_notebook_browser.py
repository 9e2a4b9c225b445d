"""End to end in a browser: Debian's classic Notebook server (jupyter-notebook 6)
with an isolated kernelspec installed by `isolated-kernel install --prefix`,
driven by headless Chromium through Selenium (python3-selenium, chromium,
chromium-driver; see scripts/install-deps).

The test opens the tree page, finds 'Python 3 (isolated)' in the New menu,
checks its logo is served, creates a notebook with it through the menu, types
and runs a cell listing HOME, checks HOME is empty, saves the notebook and a
screenshot (test-artifacts/notebook-isolated[-user].png under the repo root),
and shuts the server down. The server runs as root, and as the test user.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from ikcli import PNG_MAGIC, PYTHON, REPO, TEMPLATE, get_tools, jup, make_jupyter, processes_matching, tools  # noqa: F401

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = REPO / "test-artifacts"
DISPLAY = "Python 3 (isolated)"
NAME = "python3-isolated"
CELL = "import os; print(sorted(os.listdir(os.path.expanduser('~'))))"
IPYTHON_OWN = {".ipython", ".local", ".cache", ".config"}


def _missing_browser() -> str | None:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return "chromium / chromium-driver not installed (scripts/install-deps installs them)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "python3-selenium not installed (scripts/install-deps installs it)"
    r = subprocess.run([PYTHON, "-c", "import notebook.notebookapp"], capture_output=True)
    if r.returncode != 0:
        return "jupyter-notebook (classic Notebook 6) not installed (scripts/install-deps installs it)"
    return None


pytestmark = pytest.mark.skipif(_missing_browser() is not None, reason=_missing_browser() or "")




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, "", b""


class Server:
    def __init__(self, jup, nbdir: Path, jupyter_path: Path):
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = jup.base / "server.log"
        args = [PYTHON, "-m", "notebook", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                "--port-retries=0", f"--NotebookApp.token={self.token}", f"--notebook-dir={nbdir}",
                "--NotebookApp.open_browser=False"]
        if jup.mode == "root":
            args.append("--allow-root")
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(jup.argv(args), cwd=nbdir, env=jup.env({"JUPYTER_PATH": jupyter_path}),
                                     stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/{path.lstrip('/')}{sep}token={self.token}"

    def wait_ready(self, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"notebook server exited {self.proc.returncode}\n{self.text_log()}")
            with_ok = False
            try:
                with_ok = http_get(self.url("api/kernelspecs"), 2)[0] == 200
            except OSError:
                pass
            if with_ok:
                return
            time.sleep(0.3)
        raise AssertionError(f"notebook server not ready after {timeout}s\n{self.text_log()}")

    def text_log(self) -> str:
        self.logf.flush()
        return self.log.read_text()[-6000:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            req = urllib.request.Request(self.url("api/shutdown"), method="POST", data=b"")
            try:
                urllib.request.urlopen(req, timeout=5).read()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.logf.close()
        return self.proc.returncode


def make_driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def wait_for(pred, timeout: float, what: str, step: float = 0.2):
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


def test_notebook_new_menu_runs_isolated_kernel(jup, tools):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    # The kernelspec, installed where only this server looks.
    prefix = jup.mkdir(jup.base / "kprefix")
    r = jup.ik("install", "--prefix", prefix)
    assert r.returncode == 0, str(r)
    jupyter_path = prefix / "share" / "jupyter"
    assert (jupyter_path / "kernels" / NAME / "kernel.json").is_file(), str(r)
    nbdir = jup.mkdir(jup.base / "notebooks")
    secret = jup.home / f".ik-browser-{jup.token}"
    jup.write(secret, "secret\n", 0o600)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / ("notebook-isolated.png" if jup.mode == "root" else f"notebook-isolated-{jup.mode}.png")
    profile = Path(tempfile.mkdtemp(prefix="ik-chromium-"))
    server = Server(jup, nbdir, jupyter_path)
    driver = None
    try:
        server.wait_ready()
        # The server lists the kernelspec and serves its logo.
        status, _, body = http_get(server.url("api/kernelspecs"))
        specs = json.loads(body)["kernelspecs"]
        assert specs[NAME]["spec"]["display_name"] == DISPLAY, specs.keys()
        logo_path = specs[NAME]["resources"].get("logo-64x64")
        assert logo_path, specs[NAME]["resources"]
        status, ctype, logo = http_get(server.url(logo_path))
        assert status == 200 and logo.startswith(PNG_MAGIC), (status, ctype, logo[:16])
        assert logo == (TEMPLATE / "logo-64x64.png").read_bytes(), "not the isolated kernel's logo"
        status, _, logo = http_get(server.url(f"kernelspecs/{NAME}/logo-64x64.png"))
        assert status == 200 and logo.startswith(PNG_MAGIC)

        driver = make_driver(profile)
        driver.set_page_load_timeout(60)
        driver.get(server.url("tree"))
        wait_for(lambda: driver.find_element(By.ID, f"kernel-{NAME}"), 30, "the kernel in the New menu")
        driver.find_element(By.ID, "new-dropdown-button").click()
        item = wait_for(lambda: (lambda e: e if e.is_displayed() else None)(
            driver.find_element(By.CSS_SELECTOR, f"#kernel-{NAME} a")), 10, "the New menu to open")
        assert item.text.strip() == DISPLAY, item.text
        if jup.mode == "root":
            driver.save_screenshot(str(ARTIFACTS / "notebook-new-menu.png"))
        tree = driver.current_window_handle
        item.click()

        # A new tab with the new notebook, its kernel started.
        wait_for(lambda: len(driver.window_handles) > 1, 20, "the new notebook tab")
        driver.switch_to.window([h for h in driver.window_handles if h != tree][0])
        wait_for(lambda: driver.execute_script(
            "return !!(window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel"
            " && Jupyter.notebook.kernel.is_connected())"), 90,
            f"the isolated kernel to connect\n{server.text_log()}")
        kernel_name = driver.execute_script("return Jupyter.notebook.kernel.name")
        assert kernel_name == NAME, kernel_name
        logo_img = wait_for(lambda: driver.execute_script(
            "var i = document.querySelector('#kernel_logo_widget img');"
            "return i && i.complete && i.naturalWidth > 0 && getComputedStyle(i).display != 'none' ? i.src : null"),
            20, "the kernel logo in the notebook page")
        assert logo_img.split("?")[0].endswith(f"kernelspecs/{NAME}/logo-64x64.png"), logo_img

        # Type the cell into CodeMirror and run it with Shift+Enter.
        cm = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, ".cell.code_cell .CodeMirror"), 10, "a code cell")
        cm.click()
        driver.switch_to.active_element.send_keys(CELL)
        typed = driver.execute_script("return Jupyter.notebook.get_cell(0).get_text()")
        assert typed == CELL, typed
        driver.switch_to.active_element.send_keys(Keys.SHIFT, Keys.ENTER)
        out = wait_for(lambda: driver.execute_script(
            "var c = Jupyter.notebook.get_cell(0);"
            "return c.output_area.outputs.length && c.input_prompt_number ? c.output_area.outputs : null"),
            60, f"the cell's output\n{server.text_log()}")
        text = "".join(o.get("text", "") for o in out if o.get("output_type") == "stream")
        errors = [o for o in out if o.get("output_type") == "error"]
        assert not errors, errors
        listed = eval(text.strip(), {})  # a printed list of names
        assert isinstance(listed, list) and set(listed) <= IPYTHON_OWN, f"HOME is not empty: {listed}"
        assert secret.name not in text
        shown = driver.find_element(By.CSS_SELECTOR, ".cell.code_cell .output_area").text
        assert shown.strip() == text.strip(), (shown, text)

        driver.execute_script("Jupyter.notebook.save_notebook()")
        saved = wait_for(lambda: [p for p in nbdir.glob("*.ipynb")
                                  if '"outputs"' in p.read_text() and CELL.split(";")[0] in p.read_text()],
                         20, "the saved notebook")
        nb = json.loads(saved[0].read_text())
        assert nb["metadata"]["kernelspec"]["name"] == NAME, nb["metadata"]
        saved_text = nb["cells"][0]["outputs"][0]["text"]
        assert "".join(saved_text).strip() == text.strip(), saved_text
        time.sleep(0.5)  # let the save indicator settle for the screenshot
        driver.save_screenshot(str(shot))
        assert shot.read_bytes().startswith(PNG_MAGIC)
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        rc = server.stop()
        secret.unlink(missing_ok=True)
        shutil.rmtree(profile, ignore_errors=True)
    assert rc is not None, "the server did not stop"
    # No kernel left behind by the server's shutdown.
    left = processes_matching([str(tools.launcher), str(nbdir)])
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        time.sleep(0.3)
        left = processes_matching([str(tools.launcher), str(nbdir)])
    assert not left, f"processes left after the server shut down: {left}"
