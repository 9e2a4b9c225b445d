"""JupyterLab 3.6 in headless Chromium with the isolated kernel.

The application is JupyterLab's own front end, assembled from the npm
packages (tests/browser/jupyterlab/, built once and cached) and served by
Debian's jupyterlab_server; the kernelspec is installed by `isolated-kernel
install --prefix` where only this server looks. Server, Chromium and
chromedriver run as root ("root") and as the unprivileged test user ("user").
The tests act through the UI (menus, launcher cards, dialogs, toolbar
buttons, the Running panel) and read state from the page and the server.

Screenshots go to test-artifacts/jupyterlab-*.png (the README shows the picker).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from kit.browser import (ARTIFACTS, CHROMEDRIVER, DISPLAY, NAME, Server, app_for, install_kernelspec, jupyter_for,
                         launchers, make_driver, missing_browser, missing_server)
from kit.cli import PNG_MAGIC, TEMPLATE
from kit.common import PYTHON, processes_matching, setpriv_prefix, wait_for

pytestmark = pytest.mark.skipif(bool(missing_server() or missing_browser()),
                                reason=missing_server() or missing_browser() or "")

IPYTHON_OWN = {".ipython", ".local", ".cache", ".config"}


class Lab:
    """One JupyterLab server and one Chromium, both as the mode's user."""

    def __init__(self, j, tools, app: Path):
        self.j, self.tools = j, tools
        self.suffix = "" if j.mode == "root" else f"-{j.mode}"
        jupyter_path = install_kernelspec(j)
        self.nbdir = j.mkdir(j.base / "notebooks")
        self.secret = j.home / f".ik-lab-{j.token}"
        j.write(self.secret, "secret\n", 0o600)
        self.server = Server(j, [PYTHON, str(app / "labapp.py")], self.nbdir, jupyter_path)
        self.driver = None
        self.menu_bar_changes: list[str] = []
        try:
            self.server.wait_ready()
            # Chromium as the server's user: its own HOME and profile, owned by that user.
            chrome_home = j.mkdir(j.base / "chrome-home")
            profile = j.mkdir(j.base / "chrome-profile", 0o700)
            driver_bin = CHROMEDRIVER
            if j.mode == "user":
                driver_bin = str(j.base / "chromedriver-as-user")
                j.write(Path(driver_bin), "#!/bin/sh\nexec " + " ".join(setpriv_prefix(j.user)) +
                        f" env HOME={chrome_home} {CHROMEDRIVER} \"$@\"\n", 0o755)
            self.driver = make_driver(profile, "1280,800", driver_bin,
                                      {"HOME": str(chrome_home), "PATH": "/usr/bin:/bin"})
            self.driver.set_page_load_timeout(60)
            # chromedriver and the Chromium it started run as the server's user.
            pid = self.driver.service.process.pid
            browsers = [p for p, cmd in processes_matching([str(profile)]) if "chromium" in cmd]
            assert browsers, "no Chromium process found"
            for p in [pid, *browsers]:
                assert _uid(p) == j.uid, f"process {p} runs as uid {_uid(p)}, not {j.user}"
        except BaseException:
            self.close()
            raise

    # -- page -----------------------------------------------------------------
    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def open(self):
        """A fresh page with the default layout (?reset: no restored notebooks).

        Ready is more than `lab.restored` (index.js's ikLabReady): the theme's
        stylesheet loads on its own, and when it arrives JupyterLab's theme
        manager sets body's data-jp-theme-name, hides the whole shell (#main,
        display:none) for one animation frame, then shows it and fades its
        splash out (removed 200 ms later; until then it covers the page). On
        a busy machine that came after ikLabReady, and a click on the menu
        bar landed in the hidden frame ("element has zero size", CI). The
        theme name set and no splash left means that cycle is over
        (@jupyterlab/apputils thememanager.js _loadTheme)."""
        self.driver.get(self.server.url("lab?reset"))
        wait_for(lambda: self.js("""
            const main = document.getElementById('main');
            return document.body.dataset.ikLabReady && document.body.dataset.jpThemeName &&
                   !document.getElementById('jupyterlab-splash') && main && !main.classList.contains('lm-mod-hidden');"""),
                 60, "JupyterLab to start (restored, theme loaded, splash gone)")

    def css(self, selector: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all_css(self, selector: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def visible(self, selector: str, timeout: float = 20, what: str | None = None):
        return wait_for(lambda: next((e for e in self.all_css(selector) if e.is_displayed()), None),
                          timeout, what or selector)

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        p = ARTIFACTS / f"jupyterlab-{name}{self.suffix}.png"
        self.driver.save_screenshot(str(p))
        assert p.read_bytes().startswith(PNG_MAGIC)
        return p

    def menu(self, *labels: str, timeout: float = 30):
        """Clicks through the menu bar: menu("File", "New", "Notebook").

        An open menu does not always stay open until the next click: JupyterLab
        closes it when the menu bar changes (a plugin whose settings load late
        adds or moves a menu, and Lumino's MenuBar.insertMenu first closes the
        open one), which on a busy machine can happen after the page said it was
        ready. A path whose menus closed before its last item is clicked again
        from the bar, as a user would, within the same TIMEOUT."""
        deadline = time.monotonic() + timeout
        while not self._menu_path(labels, deadline):
            pass

    def _menu_open(self) -> bool:
        return self.js("return Array.from(document.querySelectorAll('.lm-Menu')).some(m => m.offsetParent)")

    def _click_bar_item(self, top, label: str) -> bool:
        """Clicks a menu bar item; False when the page changed between finding
        the item and clicking it (the item detached, without a box, or
        covered), with
        what the page looked like then in self.menu_bar_changes."""
        from selenium.common.exceptions import (ElementClickInterceptedException, ElementNotInteractableException,
                                                StaleElementReferenceException)

        try:
            top.click()
            return True
        except (ElementClickInterceptedException, ElementNotInteractableException, StaleElementReferenceException) as e:
            self.menu_bar_changes.append(f"{label}: {type(e).__name__}: {self._boxes(top)}")
            print(f"menu bar changed under the click: {self.menu_bar_changes[-1]}")
            return False

    def _boxes(self, element) -> str:
        """The element's ancestors as tag#id.classes [display WxH], for a failure message."""
        try:
            return self.js("""
                const main = document.getElementById('main');
                const out = [location.href, document.readyState, 'ready=' + document.body.dataset.ikLabReady,
                             'theme=' + document.body.dataset.jpThemeName,
                             'splash=' + !!document.getElementById('jupyterlab-splash'),
                             '#main.' + (main ? String(main.className).trim().split(/\\s+/).join('.') : '(none)')];
                for (let e = arguments[0]; e && e !== document; e = e.parentElement) {
                    const r = e.getBoundingClientRect();
                    out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + '.' +
                             String(e.className).trim().split(/\\s+/).join('.') +
                             ' [' + getComputedStyle(e).display + ' ' + r.width + 'x' + r.height + ']');
                }
                return out.join(' < ');""", element)
        except Exception as e:  # detached, page gone
            return f"(cannot read the page: {type(e).__name__})"

    def _menu_path(self, labels, deadline: float) -> bool:
        """One try of menu(): True when the last item was clicked, False when the menus closed before."""
        from selenium.webdriver.common.action_chains import ActionChains

        left = lambda: max(0.0, deadline - time.monotonic())  # noqa: E731
        top = wait_for(lambda: next(e for e in self.all_css(".lm-MenuBar-item") if e.text.strip() == labels[0]),
                       left(), f"menu {labels[0]}")
        # The bar's click toggles: open the menu unless it is open already.
        if not ("lm-mod-active" in (top.get_attribute("class") or "") and self._menu_open()):
            if not self._click_bar_item(top, labels[0]):
                return False
        opened = False
        for label in labels[1:]:
            # Any open menu, the newest (last in the document) first: a
            # submenu is appended to <body>, but not always as its last
            # element (":last-of-type" then matched nothing), and it opens
            # only once the app has handled the click, which on a busy
            # machine takes more than a few seconds.
            def find(label=label):
                items = [e for e in self.all_css(".lm-Menu .lm-Menu-item")
                         if e.is_displayed() and
                         e.find_element("css selector", ".lm-Menu-itemLabel").text.strip() == label]
                if items:
                    return items[-1]
                # No menu open any more, after one was (its item was clicked,
                # or it was seen open): closed under us, start again from the bar.
                nonlocal opened
                open_now = self._menu_open()
                if opened and not open_now:
                    return "closed"
                opened = opened or open_now
                return None
            item = wait_for(find, left(), f"menu item {label}")
            if item == "closed":
                return False
            opened = True
            ActionChains(self.driver).move_to_element(item).click().perform()
        return True

    # -- the current notebook -------------------------------------------------
    def notebook_state(self) -> dict:
        return self.js("""
            const w = jupyterapp.shell.currentWidget;
            const sc = w && w.sessionContext;
            if (!sc || !sc.session || !sc.session.kernel) return null;
            return {path: sc.path, kernel: sc.session.kernel.name, id: sc.session.kernel.id,
                    status: sc.kernelDisplayStatus, display: sc.kernelDisplayName};""")

    def wait_idle(self, timeout: float = 90) -> dict:
        state = wait_for(lambda: (lambda s: s if s and s["status"] == "idle" else None)(self.notebook_state()),
                           timeout, f"the kernel to be idle\n{self.server.text_log()}")
        # What the user sees: the toolbar's status circle and the status bar.
        wait_for(lambda: self.visible(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator",
                                        10).get_attribute("data-status") == "idle", 10, "the idle status circle")
        wait_for(lambda: f"{DISPLAY} | Idle" in self.css("#jp-main-statusbar").text, 10, "Idle in the status bar")
        return state

    def toolbar(self, command: str):
        return self.visible(f".jp-NotebookPanel:not(.lm-mod-hidden) [data-command='{command}']", 10, command)

    def run_cell(self, code: str, timeout: float = 60, wait: bool = True) -> int:
        """Types CODE into a new cell at the end, runs it with Shift+Enter; returns its index."""
        from selenium.webdriver.common.keys import Keys

        cells = self.all_css(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
        index = len(cells) - 1
        cell = cells[-1]
        editor = cell.find_element("css selector", ".CodeMirror")
        editor.click()
        typed = self.js("return arguments[0].CodeMirror.getValue()", editor)
        assert typed == "", f"the last cell is not empty: {typed!r}"
        self.driver.switch_to.active_element.send_keys(code)
        typed = self.js("return arguments[0].CodeMirror.getValue()", editor)
        assert typed == code, typed
        self.driver.switch_to.active_element.send_keys(Keys.SHIFT, Keys.ENTER)
        if wait:
            self.wait_cell_done(index, timeout)
        return index

    def cell_model(self, index: int) -> dict:
        return self.js("""
            const c = jupyterapp.shell.currentWidget.content.widgets[arguments[0]];
            return {count: c.model.executionCount, outputs: c.model.outputs.toJSON(),
                    shown: c.node.querySelector('.jp-OutputArea') ?
                           c.node.querySelector('.jp-OutputArea').innerText : ''};""", index)

    def wait_cell_done(self, index: int, timeout: float = 60) -> dict:
        return wait_for(lambda: (lambda m: m if m["count"] else None)(self.cell_model(index)), timeout,
                          f"cell {index} to finish\n{self.server.text_log()}")

    def dialog_button(self, label: str, timeout: float = 10):
        return wait_for(lambda: next(b for b in self.all_css(".jp-Dialog .jp-Dialog-button")
                                       if b.text.strip() == label), timeout, f"dialog button {label}")

    def launcher_card(self, section: str = "Notebook"):
        return wait_for(lambda: next(
            c for c in self.all_css(f".jp-LauncherCard[data-category='{section}']")
            if c.get_attribute("title") == DISPLAY), 30, f"the {DISPLAY} card in the launcher's {section} section")

    def close(self) -> int | None:
        if self.driver is not None:
            try:
                self.driver.quit()
            except Exception:
                pass
        rc = self.server.stop()
        self.secret.unlink(missing_ok=True)
        return rc


@pytest.fixture(scope="module", params=["root", "user"])
def lab(request, tools, lab_app):
    j = jupyter_for(request.param, tools, "jupyterlab")
    lab = Lab(j, tools, app_for(j, tools, lab_app))
    yield lab
    rc = lab.close()
    try:
        assert rc is not None, "the server did not stop"
        wait_for(lambda: not launchers(tools, j), 10, "no launcher left after the server stopped")
        assert os.listdir(lab.server.tmpdir) == [], "files left in the server's TMPDIR"
    finally:
        j.close()


def _uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])


def outputs_text(model: dict) -> str:
    return "".join(o.get("text", "") for o in model["outputs"] if o.get("output_type") == "stream")


# ---------------------------------------------------------------- the tests


def test_launcher_shows_isolated_card_with_logo(lab):
    lab.open()
    card = lab.launcher_card()
    img = card.find_element("css selector", ".jp-LauncherCard-icon img")
    src = img.get_attribute("src")
    spec = lab.server.api("api/kernelspecs")["kernelspecs"][NAME]
    assert spec["spec"]["display_name"] == DISPLAY
    # JupyterLab picks the SVG logo when the kernelspec has one (ours has SVG and PNGs).
    logo_url = next((u for u in spec["resources"].values() if src.split("?")[0].endswith(u.split("?")[0])), None)
    assert logo_url, (src, spec["resources"])
    wait_for(lambda: lab.js("return arguments[0].complete && arguments[0].naturalWidth > 0", img), 10,
               "the logo image to load")
    # The bytes the page shows are the isolated kernelspec's own logo.
    status, logo = lab.server.get(logo_url)
    assert status == 200 and logo == (TEMPLATE / logo_url.split("?")[0].rsplit("/", 1)[1]).read_bytes(), status
    # The console section offers it too; the plain kernel is still there (we add, we don't replace).
    lab.launcher_card("Console")
    titles = [c.get_attribute("title") for c in lab.all_css(".jp-LauncherCard[data-category='Notebook']")]
    assert DISPLAY in titles and len(titles) >= 2, titles
    lab.shot("launcher")


def test_picker_lists_and_starts_isolated_kernel(lab):
    from selenium.webdriver.support.ui import Select

    lab.open()
    before = {pid for pid, _ in launchers(lab.tools, lab.j)}
    lab.menu("File", "New", "Notebook")
    lab.visible(".jp-Dialog", 20, "the Select Kernel dialog")
    assert lab.css(".jp-Dialog-header").text.strip() == "Select Kernel"
    select = Select(lab.css(".jp-Dialog select"))
    options = {o.text.strip(): o.get_attribute("value") for o in select.options}
    assert DISPLAY in options, options
    assert json.loads(options[DISPLAY]) == {"name": NAME}, options
    select.select_by_visible_text(DISPLAY)
    assert select.first_selected_option.text.strip() == DISPLAY
    lab.shot("picker")
    lab.dialog_button("Select").click()

    state = lab.wait_idle()
    assert state["kernel"] == NAME and state["display"] == DISPLAY, state
    assert lab.visible(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-KernelName").text.strip() == DISPLAY
    # The server started our launcher for it.
    kernels = lab.server.api("api/kernels")
    assert [k["name"] for k in kernels if k["id"] == state["id"]] == [NAME], kernels
    mine = [pid for pid, cmd in launchers(lab.tools, lab.j) if f"kernel-{state['id']}.json" in cmd]
    assert mine and not set(mine) & before, launchers(lab.tools, lab.j)

    i = lab.run_cell("import sys; print(sys.executable, 6 * 7)")
    m = lab.wait_cell_done(i)
    # the interpreter the ready-made kernelspec runs (its argv after --)
    assert outputs_text(m).split() == ["/usr/bin/python3", "42"], m
    assert "42" in m["shown"], m
    lab.shot("picker-started")


def test_notebook_output_input_interrupt_restart_cut_off(lab):
    lab.open()
    lab.launcher_card().click()
    state = lab.wait_idle()
    assert state["kernel"] == NAME, state

    # output
    i = lab.run_cell("print('hello from the sandbox', 6 * 7)")
    m = lab.wait_cell_done(i)
    assert outputs_text(m) == "hello from the sandbox 42\n", m
    assert "hello from the sandbox 42" in m["shown"]

    # input(): the page shows a prompt box; type into it
    from selenium.webdriver.common.keys import Keys
    i = lab.run_cell("name = input('your name? '); print('hello', name[::-1])", wait=False)
    box = lab.visible(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Stdin-input", 60, "the input() box")
    assert "your name?" in lab.css(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Stdin").text
    box.send_keys("latsyrc", Keys.ENTER)
    m = lab.wait_cell_done(i)
    assert "hello crystal" in outputs_text(m), m

    # interrupt: the stop button stops a busy loop
    i = lab.run_cell("while True: pass", wait=False)
    wait_for(lambda: lab.notebook_state()["status"] == "busy", 20, "the kernel to be busy")
    time.sleep(0.5)
    lab.toolbar("kernelmenu:interrupt").click()
    m = lab.wait_cell_done(i, 30)
    errors = [o for o in m["outputs"] if o.get("output_type") == "error"]
    assert [e["ename"] for e in errors] == ["KeyboardInterrupt"], m
    lab.wait_idle(20)
    i = lab.run_cell("print('alive after the interrupt')")
    assert outputs_text(lab.wait_cell_done(i)) == "alive after the interrupt\n"

    # restart: a new kernel process (and sandbox), the old state gone
    i = lab.run_cell("kept = 'before restart'; print(kept)")
    assert outputs_text(lab.wait_cell_done(i)) == "before restart\n"
    old = {pid for pid, cmd in launchers(lab.tools, lab.j) if f"kernel-{state['id']}.json" in cmd}
    assert old, f"no launcher running for kernel {state['id']}: {launchers(lab.tools, lab.j)}"
    lab.toolbar("kernelmenu:restart").click()
    lab.dialog_button("Restart").click()
    wait_for(lambda: not (old & {pid for pid, _ in launchers(lab.tools, lab.j)}), 30,
               "the old launcher to exit after the restart")
    assert lab.wait_idle()["id"] == state["id"]
    assert [pid for pid, cmd in launchers(lab.tools, lab.j) if f"kernel-{state['id']}.json" in cmd], \
        "no launcher after the restart"
    i = lab.run_cell("print('kept' in dir())")
    assert outputs_text(lab.wait_cell_done(i)) == "False\n"

    # cut off: no network (not even the Jupyter server on the host's loopback), an empty HOME
    # (one line: the notebook's editor indents what is typed after a colon)
    code = ("import os, socket, json, errno; a = socket.socket(); a.settimeout(3); b = socket.socket(); "
            "b.settimeout(3); print(json.dumps({"
            f"'server': errno.errorcode.get(a.connect_ex(('127.0.0.1', {lab.server.port})), 'connected'), "
            "'internet': errno.errorcode.get(b.connect_ex(('1.1.1.1', 53)), 'connected'), "
            "'home': sorted(os.listdir(os.path.expanduser('~')))}))")
    i = lab.run_cell(code)
    m = lab.wait_cell_done(i)
    result = json.loads(outputs_text(m).strip().splitlines()[-1])
    # refused: the sandbox's loopback is its own; unreachable: no interface but lo
    assert result["server"] == "ECONNREFUSED" and result["internet"] == "ENETUNREACH", result
    assert set(result["home"]) <= IPYTHON_OWN and lab.secret.name not in result["home"], result
    # ... while the host's server is listening on that port.
    assert lab.server.api("api/status")["kernels"] >= 1
    lab.shot("notebook")


def test_running_panel_shutdown_leaves_nothing(lab):
    lab.open()
    runtime_before = set(os.listdir(lab.j.runtime_dir))
    mounts_before = lab.server.mountinfo()
    # Kernels of the earlier tests were shut down with them? Not in JupyterLab:
    # closing a notebook leaves its kernel running. Start one more, close its tab.
    lab.launcher_card().click()
    lab.wait_idle()
    i = lab.run_cell("print('about to close')")
    lab.wait_cell_done(i)
    kernels = lab.server.api("api/kernels")
    assert kernels and all(k["name"] == NAME for k in kernels), kernels
    running = launchers(lab.tools, lab.j)
    assert {k["id"] for k in kernels} == {k["id"] for k in kernels if any(k["id"] in cmd for _, cmd in running)}, \
        (running, kernels)
    # Close the notebook (File > Close Tab; JupyterLab asks about the unsaved cell).
    lab.menu("File", "Close Tab")
    lab.dialog_button("Discard").click()
    wait_for(lambda: not lab.all_css(".jp-NotebookPanel"), 10, "the notebook to close")
    assert len(lab.server.api("api/kernels")) == len(kernels), "closing the tab stopped the kernel"

    # The Running panel lists them; shut each down with its own button.
    lab.css(".jp-SideBar [data-id='jp-running-sessions']").click()
    panel = lab.visible("#jp-running-sessions", 10)
    items = wait_for(lambda: [e for e in panel.find_elements("css selector", ".jp-RunningSessions-item")
                                if e.is_displayed() and ".ipynb" in e.text], 20, "notebooks in the Running panel")
    assert len(items) == len(kernels), [e.text for e in items]
    lab.shot("running")
    for _ in range(len(items)):
        item = wait_for(lambda: next(e for e in panel.find_elements("css selector", ".jp-RunningSessions-item")
                                       if e.is_displayed() and ".ipynb" in e.text), 10, "a session")
        # its shut-down button shows when the pointer is over the item
        from selenium.webdriver.common.action_chains import ActionChains
        button = item.find_element("css selector", ".jp-RunningSessions-itemShutdown")
        ActionChains(lab.driver).move_to_element(item).move_to_element(button).click().perform()
        wait_for(lambda: len(lab.server.api("api/sessions")) < len(items) - _, 30, "the session to end")
    wait_for(lambda: lab.server.api("api/kernels") == [], 30, "no kernels on the server")
    wait_for(lambda: not [e for e in panel.find_elements("css selector", ".jp-RunningSessions-item")
                            if e.is_displayed() and ".ipynb" in e.text], 20, "an empty Running panel")

    # Nothing left: launcher and kernel processes, connection files, mounts.
    wait_for(lambda: not launchers(lab.tools, lab.j), 10, f"no launcher left: {launchers(lab.tools, lab.j)}")
    left = kernel_processes(lab)
    assert not left, f"processes of the kernels left: {left}"
    assert set(os.listdir(lab.j.runtime_dir)) <= runtime_before, "kernel files left in the runtime dir"
    assert not [f for f in os.listdir(lab.j.runtime_dir) if f.startswith("kernel-")], os.listdir(lab.j.runtime_dir)
    assert lab.server.mountinfo() - mounts_before == set(), "mounts left in the server's mount namespace"


def kernel_processes(lab) -> list[tuple[int, str]]:
    """ipykernel processes of this server's kernels (their argv names a connection file in its runtime dir)."""
    return [(pid, cmd) for pid, cmd in processes_matching([str(lab.j.runtime_dir)])
            if "ipykernel" in cmd]

