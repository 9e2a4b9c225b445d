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
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from kit.browser import ARTIFACTS, DISPLAY, NAME, Server, install_kernelspec, make_driver, missing_browser
from kit.cli import PNG_MAGIC, TEMPLATE
from kit.common import PYTHON, processes_matching, wait_for, wait_until

CELL = "import os; print(sorted(os.listdir(os.path.expanduser('~'))))"
IPYTHON_OWN = {".ipython", ".local", ".cache", ".config"}


def _missing_browser() -> str | None:
    missing = missing_browser()
    if missing:
        return missing
    r = subprocess.run([PYTHON, "-c", "import notebook.notebookapp"], capture_output=True)
    if r.returncode != 0:
        return "jupyter-notebook (classic Notebook 6) not installed (scripts/install-deps installs it)"
    return None


pytestmark = pytest.mark.skipif(_missing_browser() is not None, reason=_missing_browser() or "")


def test_notebook_new_menu_runs_isolated_kernel(jup, tools):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    # The kernelspec, installed where only this server looks.
    jupyter_path = install_kernelspec(jup)
    nbdir = jup.mkdir(jup.base / "notebooks")
    secret = jup.home / f".ik-browser-{jup.token}"
    jup.write(secret, "secret\n", 0o600)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / ("notebook-isolated.png" if jup.mode == "root" else f"notebook-isolated-{jup.mode}.png")
    profile = Path(tempfile.mkdtemp(prefix="ik-chromium-"))
    server = Server(jup, [PYTHON, "-m", "notebook"], nbdir, jupyter_path, app="notebook")
    driver = None
    try:
        server.wait_ready()
        # The server lists the kernelspec and serves its logo.
        status, _, body = server.http_get("api/kernelspecs")
        specs = json.loads(body)["kernelspecs"]
        assert specs[NAME]["spec"]["display_name"] == DISPLAY, specs.keys()
        logo_path = specs[NAME]["resources"].get("logo-64x64")
        assert logo_path, specs[NAME]["resources"]
        status, ctype, logo = server.http_get(logo_path)
        assert status == 200 and logo.startswith(PNG_MAGIC), (status, ctype, logo[:16])
        assert logo == (TEMPLATE / "logo-64x64.png").read_bytes(), "not the isolated kernel's logo"
        status, _, logo = server.http_get(f"kernelspecs/{NAME}/logo-64x64.png")
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
    wait_until(lambda: not processes_matching([str(tools.launcher), str(nbdir)]), 10, 0.3)
    left = processes_matching([str(tools.launcher), str(nbdir)])
    assert not left, f"processes left after the server shut down: {left}"
