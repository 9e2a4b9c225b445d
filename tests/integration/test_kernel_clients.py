"""isolated-kernel-launcher with the other real Jupyter clients: nbconvert
(nbclient) on the shipped example notebooks, the jupyter_kernel_test protocol
suite, a second BlockingKernelClient and `jupyter console --existing` attached
to the same kernel. Root and unprivileged user (see tests/kit/kernel.py).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import socket
import tempfile
import time
import unittest
from pathlib import Path

import nbformat
import pytest

from kit.common import PYTHON, REPO, pid_alive
from kit.kernel import (HOST_PARAMS, KERNEL, KERNEL_PROBE, START_TIMEOUT, _make_host, default_launcher, drain_iopub, run_cell,
                        scenario, scenario_main, start_kernel, step, write_kernelspecs)

EXAMPLES = REPO / "share" / "examples"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# =========================================================== nbconvert


def _stream(cell, name="stdout") -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o["output_type"] == "stream" and o["name"] == name)


def _fields(cell) -> dict:
    """`name: value` lines printed by a cell."""
    out = {}
    for line in _stream(cell).splitlines():
        k, sep, v = line.partition(": ")
        if sep:
            out[k] = v
    return out


def _by_tag(nb) -> dict:
    return {t: c for c in nb["cells"] for t in c.get("metadata", {}).get("tags", [])}


@pytest.fixture(scope="module", params=HOST_PARAMS)
def executed(request, ik_session):
    """Every example notebook executed by `jupyter nbconvert --execute` in its own
    folder (as the notebooks' cwd), as root and as the test user, cold and pooled."""
    h = _make_host(request, ik_session, request.param)
    notebooks = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))
    assert "hello-isolated.ipynb" in notebooks and "rich-output.ipynb" in notebooks
    for name in notebooks:
        h.write(h.workdir / name, (EXAMPLES / name).read_text())
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    h.write(h.workdir / "probe-port.txt", f"{port}\n")  # what-can-i-see.ipynb's convention
    secret = h.home_secret()
    outdir = h.mkdir(h.private / "executed")
    # hello-isolated first: it lists its folder before the others write into it
    order = ["hello-isolated.ipynb"] + [n for n in notebooks if n != "hello-isolated.ipynb"]
    try:
        h.pool_ready(KERNEL_PROBE, env={"IK_PROBE_PORT": port})
        run = h.run([PYTHON, "-m", "nbconvert", "--to", "notebook", "--execute",
                     f"--ExecutePreprocessor.kernel_name={KERNEL_PROBE}", "--ExecutePreprocessor.timeout=120",
                     "--output-dir", outdir, *order],
                    cwd=h.workdir, env={"IK_PROBE_PORT": port})
        leftovers = h.leftovers(grace=5)
        if run.returncode == 0:
            h.check_claims(min_claims=len(notebooks))
        results = {}
        for name in notebooks:
            f = outdir / name
            results[name] = nbformat.read(f, as_version=4) if f.exists() else None
        yield {"host": h, "run": run, "nb": results, "port": port, "secret": secret,
               "leftovers": leftovers, "notebooks": notebooks}
    finally:
        srv.close()
        h.close()


def test_nbconvert_runs_every_example(executed):
    run = executed["run"]
    assert run.returncode == 0, run
    for name in executed["notebooks"]:
        nb = executed["nb"][name]
        assert nb is not None, f"{name} was not written\n{run}"
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            assert cell["execution_count"] is not None, (name, cell["source"])
            tags = cell.get("metadata", {}).get("tags", [])
            errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
            if "raises-exception" not in tags:
                assert not errors, (name, cell["source"], errors)
    assert executed["leftovers"] == [], f"processes left after nbconvert: {executed['leftovers']}"


def test_hello_isolated_notebook(executed):
    h = executed["host"]
    nb = executed["nb"]["hello-isolated.ipynb"]
    assert nb is not None, executed["run"]
    cells = _by_tag(nb)

    who = _fields(cells["whoami"])
    assert who["uid"] == str(h.uid), who
    assert who["user"] == h.user, who

    cwd = _fields(cells["cwd"])
    assert cwd["cwd"] == str(h.workdir), cwd
    entries = eval(cwd["cwd entries"])  # a printed list of str
    assert "hello-isolated.ipynb" in entries and "probe-port.txt" in entries, entries

    wrote = _fields(cells["write"])
    out = h.workdir / "hello-isolated-output.txt"
    assert wrote["wrote"] == str(out)
    assert out.read_text() == f"written by the kernel in {h.workdir}\n"
    assert out.stat().st_uid == h.uid

    home = _fields(cells["home"])
    assert home["HOME"] == str(h.home)
    assert executed["secret"].name not in home["HOME entries"], home

    net = _fields(cells["network"])
    port = executed["port"]
    assert f"tcp 127.0.0.1:{port}" in net, f"IK_PROBE_PORT did not reach the kernel: {net}"
    assert net[f"tcp 127.0.0.1:{port}"].startswith("failed"), f"host loopback reachable: {net}"
    assert net["interfaces"] == "['lo']", net

    procs = _fields(cells["processes"])
    assert int(procs["processes"]) <= 5, procs


def test_rich_output_notebook(executed):
    nb = executed["nb"]["rich-output.ipynb"]
    assert nb is not None, executed["run"]
    cells = _by_tag(nb)

    md, html = cells["markdown-html"]["outputs"]
    assert md["output_type"] == "display_data" and "**Markdown**" in md["data"]["text/markdown"]
    assert "<table>" in html["data"]["text/html"]

    (svg,) = cells["svg"]["outputs"]
    assert svg["output_type"] == "execute_result" and "<polyline" in svg["data"]["image/svg+xml"]

    outs = cells["matplotlib"]["outputs"]
    assert [o for o in outs if "image/png" in o.get("data", {})] or \
        "not installed" in _stream(cells["matplotlib"]), outs

    (progress,) = cells["update-display"]["outputs"]
    assert progress["data"]["text/markdown"] == "step 3 of 3", progress

    assert _stream(cells["clear-output"]) == "only this line remains\n", cells["clear-output"]["outputs"]

    c = cells["stderr-and-result"]
    assert _stream(c, "stderr") == "a warning on stderr\n"
    (res,) = [o for o in c["outputs"] if o["output_type"] == "execute_result"]
    assert res["data"]["text/plain"] == "{'squares': [0, 1, 4, 9, 16]}"

    (err,) = cells["error"]["outputs"]
    assert err["output_type"] == "error" and err["ename"] == "ZeroDivisionError", err
    assert "divide(1, 0)" in ANSI.sub("", "\n".join(err["traceback"]))

    assert _stream(cells["after-error"]) == "still running after the error\n"


# =========================================================== jupyter_kernel_test


try:
    import jupyter_kernel_test as jkt
except ImportError:  # pragma: no cover
    jkt = None


@unittest.skipIf(jkt is None, "python3-jupyter-kernel-test is not installed")
class IsolatedKernelTests(jkt.KernelTests if jkt else unittest.TestCase):
    """The jupyter_kernel_test protocol suite against the isolated kernelspec
    (IK_LAUNCHER or the build's launcher), as whoever runs it."""

    kernel_name = KERNEL
    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise"
    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"},
    ]
    code_display_data = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))", "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\frac{1}{2}'))", "mime": "text/latex"},
    ]
    code_history_pattern = "1?2*"
    # "range" is left out as in jupyter_kernel_test's own ipykernel example: IPython
    # answers a range in the current session with session number 0, not the
    # session the tail reply named.
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    @contextlib.contextmanager
    def subTest(self, msg=unittest.case._subtest_msg_sentinel, **params):
        """unittest's runner skips just the subtest that raises SkipTest; pytest
        (without pytest-subtests) would skip the whole test, so test_history's
        "search" part never ran. Keep unittest's meaning."""
        try:
            with super().subTest(msg, **params):
                yield
        except unittest.SkipTest:
            pass

    @classmethod
    def setUpClass(cls):
        from jupyter_client.manager import start_new_kernel
        cls._tmp = Path(tempfile.mkdtemp(prefix="ik-jkt-"))
        cls._old_env = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "JUPYTER_RUNTIME_DIR")}
        if not os.environ.get("IK_POOL_BIN"):  # a pooled host's JUPYTER_PATH has its pooled kernelspecs
            os.environ["JUPYTER_PATH"] = str(write_kernelspecs(cls._tmp / "jupyter", default_launcher()))
        os.environ["JUPYTER_RUNTIME_DIR"] = str(cls._tmp / "runtime")
        work = cls._tmp / "work"
        work.mkdir()
        cls.km, cls.kc = start_new_kernel(kernel_name=cls.kernel_name, cwd=str(work),
                                          startup_timeout=START_TIMEOUT)

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            for k, v in cls._old_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            shutil.rmtree(cls._tmp, ignore_errors=True)

    def test_runs_behind_the_relay(self):
        """Not a plain kernel by mistake: the kernel's own connection file uses ipc."""
        self.flush_channels()
        reply, outputs = self.execute_helper(
            "import json, ipykernel\nprint(json.load(open(ipykernel.get_connection_file()))['transport'])")
        self.assertEqual(reply["content"]["status"], "ok")
        text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        self.assertEqual(text, "ipc\n")


JKT_TESTS = 13  # jupyter_kernel_test's 12 + test_runs_behind_the_relay


@pytest.mark.parametrize("khost", ["user", "user-pooled", "root-pooled"], indirect=True)
def test_kernel_test_suite_as_user(khost):
    """The same suite, run by the unprivileged user through setpriv (pytest's own
    user runs it in-process, cold: IsolatedKernelTests above), cold and pooled,
    and by root against pooled kernels. Its kernel's connection file is
    jupyter_client's mkstemp in the client's TMPDIR, the directory that holds
    the kernel's working directory (a pooled claim once failed there)."""
    if khost.mode != "user" and not khost.pooled:
        pytest.skip("not root: IsolatedKernelTests already ran as this user")
    script = khost.session.scripts / Path(__file__).name
    r = khost.run([PYTHON, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "--noconftest",
                   f"{script}::IsolatedKernelTests"], cwd=khost.workdir, timeout=300)
    assert r.returncode == 0, r
    assert re.search(rf"\b{JKT_TESTS} passed\b", r.stdout), r
    assert not re.search(r"\d+ (skipped|failed|error)", r.stdout), r
    assert khost.leftovers(grace=5) == []


# =========================================================== several clients


@scenario
def two_clients(out, token):
    """A second BlockingKernelClient and two `jupyter console --existing` sessions."""
    import pexpect
    from jupyter_client import BlockingKernelClient

    km, kc = start_kernel()
    proc = km.provisioner.process
    conn = km.connection_file
    kc2 = BlockingKernelClient(connection_file=conn)
    kc2.load_connection_file()
    kc2.start_channels()
    kc2.wait_for_ready(timeout=START_TIMEOUT)

    with step(out, "second_client") as s:
        s["set"] = run_cell(kc, f"ik_shared = 'shared-{token}'\nprint('kc1 set it')")
        s["kc2_iopub"] = drain_iopub(kc2, 1.0)   # kc1's output, broadcast
        s["get"] = run_cell(kc2, "print(ik_shared)")

    with step(out, "stdin_routing") as s:
        s["kc2"] = run_cell(kc2, "x = input('kc2 prompt: ')\nprint('kc2 got', x)", stdin=["from-kc2"])
        try:
            s["kc1_stdin"] = kc.get_stdin_msg(timeout=0.5)["content"]
        except queue.Empty:
            s["kc1_stdin"] = None
        s["kc1"] = run_cell(kc, "y = input('kc1 prompt: ')\nprint('kc1 got', y)", stdin=["from-kc1"])

    prompt = r"In \[\d+\]: "
    console = [PYTHON, "-m", "jupyter_console", "--existing", conn, "--simple-prompt"]

    with step(out, "console") as s:
        drain_iopub(kc, 0.2)
        child = pexpect.spawn(console[0], console[1:], env=dict(os.environ), encoding="utf-8",
                              timeout=60, dimensions=(40, 200))
        try:
            child.expect(prompt)
            child.sendline("print('console sees', ik_shared)")
            child.expect(prompt)
            s["read"] = ANSI.sub("", child.before)
            child.sendline(f"ik_from_console = 'console-{token}'")
            child.expect(prompt)
            s["kc1_iopub"] = drain_iopub(kc, 1.0)  # the console's execution, broadcast
            s["from_console"] = run_cell(kc, "print(ik_from_console)")
            child.sendeof()   # Ctrl-D: leave, keep the kernel
            child.expect(r"exit \(\[y\]/n\)\?")
            child.sendline("y")
            child.expect(pexpect.EOF, timeout=30)
            s["exit_output"] = ANSI.sub("", child.before)
        finally:
            child.close(force=True)
        s["exitstatus"] = child.exitstatus
        s["after"] = run_cell(kc, "print('kernel still here')")

    with step(out, "console_shutdown") as s:
        child = pexpect.spawn(console[0], console[1:], env=dict(os.environ), encoding="utf-8",
                              timeout=60, dimensions=(40, 200))
        try:
            child.expect(prompt)
            child.sendline("exit")
            child.expect(pexpect.EOF, timeout=30)
            s["output"] = ANSI.sub("", child.before)
        finally:
            child.close(force=True)
        t = time.monotonic()
        s["returncode"] = proc.wait(timeout=30)
        s["seconds"] = time.monotonic() - t
        s["launcher_alive"] = pid_alive(proc.pid)

    for c in (kc, kc2):
        c.stop_channels()
    km.shutdown_kernel(now=True)


def test_second_client_and_jupyter_console(khost):
    r = khost.scenario(__file__, "two_clients", token=khost.token)
    tok = khost.token

    s = r["second_client"]
    assert s["set"]["stdout"] == "kc1 set it\n"
    assert s["get"]["stdout"] == f"shared-{tok}\n", s["get"]
    seen = [m for m in s["kc2_iopub"] if m["parent"] == s["set"]["msg_id"] and m["msg_type"] == "stream"]
    assert seen and seen[0]["content"]["text"] == "kc1 set it\n", \
        f"the second client did not receive the first client's iopub output: {s['kc2_iopub']}"

    s = r["stdin_routing"]
    assert s["kc2"]["input_requests"] == [{"prompt": "kc2 prompt: ", "password": False}], s["kc2"]
    assert s["kc2"]["stdout"] == "kc2 got from-kc2\n"
    assert s["kc1_stdin"] is None, f"kc2's input request reached kc1: {s['kc1_stdin']}"
    assert s["kc1"]["input_requests"] == [{"prompt": "kc1 prompt: ", "password": False}], s["kc1"]
    assert s["kc1"]["stdout"] == "kc1 got from-kc1\n"

    s = r["console"]
    assert f"console sees shared-{tok}" in s["read"], s["read"]
    assert s["from_console"]["stdout"] == f"console-{tok}\n", s["from_console"]
    inputs = [m["content"]["code"] for m in s["kc1_iopub"] if m["msg_type"] == "execute_input"]
    assert f"ik_from_console = 'console-{tok}'" in inputs, \
        f"the first client did not see the console's execute_input: {s['kc1_iopub']}"
    assert "keeping kernel alive" in s["exit_output"], s["exit_output"]
    assert s["after"]["stdout"] == "kernel still here\n", "kernel gone after the console detached"

    s = r["console_shutdown"]
    assert s["returncode"] == 0, f"launcher status after `exit` in jupyter console: {s}"
    assert not s["launcher_alive"]
    assert r.leftovers == []


if __name__ == "__main__":
    scenario_main()
