"""`isolated-kernel run`: many notebooks, each in a fresh isolated kernel.

Real kernels of an isolated kernelspec installed with `isolated-kernel
install`, real nbclient (the worker) and real nbconvert for the reference
outputs; as root and as the unprivileged test user (the cli kit's `jup` fixture).
Checks: outputs equal nbconvert's, the verdicts of a mixed batch and the exit
status, Ctrl-C and SIGKILL mid-batch leave nothing behind, --resume, usage
errors.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kit.common import PYTHON, install_pool_waiter, processes_matching

KERNEL = "run-isolated"
REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "share" / "run" / "ik_run_notebook.py"


@pytest.fixture(scope="session", autouse=True)
def installed_worker(tools):
    """The worker where an installation has it: bin/../share/isolated-kernel/."""
    dest = tools.root / "share" / "isolated-kernel" / "ik_run_notebook.py"
    shutil.copy2(WORKER, dest)
    dest.chmod(0o644)
    return dest


def nb_text(cells: list[str], markdown_first: bool = True) -> str:
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if markdown_first:
        nb.cells.append(nbformat.v4.new_markdown_cell("# a notebook"))
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    return nbformat.writes(nb)


def install(jup):
    r = jup.ik("install", "--user", "--name", KERNEL, "--no-check")
    assert r.returncode == 0, str(r)


def run_env(jup) -> dict:
    """XDG_RUNTIME_DIR in the test's own directory: run's private runtime
    directory goes there, not into /tmp, where other runs on this machine
    (other test sessions, bench/run) make theirs."""
    return {"XDG_RUNTIME_DIR": str(jup.runtime_dir)}


def run_dirs(jup) -> set[str]:
    return {d for d in os.listdir(jup.runtime_dir) if d.startswith("ik-run-")}


def read_report(path: Path) -> dict:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["notebook"]: r for r in recs}


def tmp_json(jup) -> set[str]:
    """The test user's .json files in the host's /tmp (jupyter_client's
    mkstemp connection files land there when a kernel manager has no name)."""
    out = set()
    for name in os.listdir("/tmp"):
        if name.endswith(".json"):
            with contextlib.suppress(OSError):
                if os.lstat(f"/tmp/{name}").st_uid == jup.uid:
                    out.add(name)
    return out


def assert_nothing_left(jup, before_dirs: set[str], before_tmp: set[str] | None = None, grace: float = 10.0):
    """No worker, launcher or kernel of this test, no run-private runtime
    directory, no connection file of the test user left in /tmp."""
    deadline = time.monotonic() + grace
    while True:
        procs = processes_matching([str(jup.base)])  # the runtime dir is in it (run_env)
        left = run_dirs(jup) - before_dirs
        tmp = tmp_json(jup) - before_tmp if before_tmp is not None else set()
        if not procs and not left and not tmp:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: processes {procs}, runtime dirs {left}, in /tmp {tmp}")
        time.sleep(0.2)


# ------------------------------------------------------------------ outputs


RICH = [
    'print("hello"); import sys; print("to stderr", file=sys.stderr)',
    "from IPython.display import display, HTML, Markdown\ndisplay(HTML('<b>bold</b>')); Markdown('*md*')",
    "x = {'a': [1, 2, 3]}\nx",
    "import os\nos.path.basename(os.getcwd())",
    "open('written.txt', 'w').write('in my folder')",
    "for i in range(3):\n    print(i)",
]


def normalized(path: Path) -> dict:
    import nbformat
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = []
    for c in nb.cells:
        d = {"cell_type": c.cell_type, "source": c.source}
        if c.cell_type == "code":
            d["execution_count"] = c.execution_count
            d["outputs"] = c.outputs
            d["metadata"] = {k: v for k, v in c.metadata.items() if k != "execution"}
        cells.append(d)
    return {"cells": cells, "metadata": nb.metadata, "nbformat": [nb.nbformat, nb.nbformat_minor]}


def test_outputs_equal_nbconvert(jup, tools):
    install(jup)
    src = jup.mkdir(jup.work / "course")
    for name in ("a", "b", "sub/c"):
        jup.write(src / f"{name}.ipynb", nb_text(RICH))
    r = jup.ik("run", "-j", "2", "--kernel", KERNEL, "--output-dir", "out", "course", cwd=jup.work, timeout=400)
    assert r.returncode == 0, str(r)
    ref = jup.mkdir(jup.work / "ref")
    for name in ("a", "b", "sub/c"):
        nbc = jup.run([PYTHON, "-m", "nbconvert", "--execute", "--to", "notebook",
                       f"--ExecutePreprocessor.kernel_name={KERNEL}", "--output-dir", ref / Path(name).parent,
                       src / f"{name}.ipynb"], cwd=jup.work, timeout=200)
        assert nbc.returncode == 0, str(nbc)
        ours = normalized(jup.work / "out" / "course" / f"{name}.ipynb")
        theirs = normalized(ref / f"{name}.ipynb")
        differ = [(a, b) for a, b in zip(ours["cells"], theirs["cells"]) if a != b] or [(ours, theirs)]
        assert ours == theirs, f"{name}: run and nbconvert differ (run, nbconvert):\n" + \
            "\n".join(f"{json.dumps(a)[:1500]}\n{json.dumps(b)[:1500]}" for a, b in differ[:2])
        # The kernel ran in the notebook's own folder.
        assert (src / Path(name).parent / "written.txt").read_text() == "in my folder"
    rep = read_report(jup.work / "out" / "report.jsonl")
    assert set(rep) == {"course/a.ipynb", "course/b.ipynb", "course/sub/c.ipynb"}, rep
    for rec in rep.values():
        assert rec["status"] == "ok" and rec["cells"] == len(RICH) and rec["peak_memory_bytes"] > 10 << 20, rec
    assert "3 notebooks: 3 ok" in r.stdout, str(r)


# ------------------------------------------------------------------ mixed batch


def test_mixed_batch_statuses(jup, tools):
    install(jup)
    before = run_dirs(jup)
    b = jup.mkdir(jup.work / "batch")
    other = jup.mkdir(jup.work / "other")  # another student's folder, beside the batch
    jup.write(other / "notes.txt", "other student\n")
    notebooks = {
        "ok": ["x = 6 * 7", "print(x)"],
        "exception": ["x = 1", "1 / 0", "print('not reached')"],
        "loop": ["while True:\n    pass"],
        "bomb": ["a = []\nwhile True:\n    a.append(bytearray(64 << 20))"],
        "exit": ["import os\nos._exit(3)"],
        "outside": [f"open({str(other / 'evil.txt')!r}, 'w').write('x')"],
    }
    for name, cells in notebooks.items():
        jup.write(b / f"{name}.ipynb", nb_text(cells))
    jup.write(b / "malformed.ipynb", '{"cells": [')
    if jup.mode == "root":  # root reads every file: a notebook whose target is gone instead
        (b / "unreadable.ipynb").symlink_to(b / "gone.ipynb")
    else:
        jup.write(b / "unreadable.ipynb", nb_text(["1"]), mode=0o000)
    empty = jup.mkdir(jup.work / "empty")
    # The per-cell timeout must stay well above the time the memory bomb needs to reach its limit (~1 s of CPU);
    # at 4 s a starved CPU (load 21) once let the timeout win and the verdict changed.
    r = jup.ik("run", "-j", "2", "--kernel", KERNEL, "--timeout", "8s", "--memory", "1G",
               "--report", "report.csv", "batch", "empty", cwd=jup.work, env=run_env(jup), timeout=600)
    assert r.returncode == 1, str(r)
    rep = read_report(jup.work / "run-output" / "report.jsonl")
    st = {k: v["status"] for k, v in rep.items()}
    assert st == {
        "batch/ok.ipynb": "ok", "batch/exception.ipynb": "error", "batch/loop.ipynb": "timeout",
        "batch/bomb.ipynb": "memory-limit", "batch/exit.ipynb": "kernel-died", "batch/outside.ipynb": "error",
        "batch/malformed.ipynb": "could-not-start", "batch/unreadable.ipynb": "could-not-start",
        "empty": "could-not-start"}, f"{json.dumps(rep, indent=1)}\n{r}"
    exc = rep["batch/exception.ipynb"]
    assert (exc["cell"], exc["ename"], exc["evalue"]) == (2, "ZeroDivisionError", "division by zero"), exc
    assert rep["batch/loop.ipynb"]["cell"] == 1
    assert "exited with status 3" in rep["batch/exit.ipynb"]["detail"], rep["batch/exit.ipynb"]
    assert rep["batch/outside.ipynb"]["ename"] in ("FileNotFoundError", "PermissionError", "OSError")
    assert not (other / "evil.txt").exists()
    assert "not a valid notebook" in rep["batch/malformed.ipynb"]["detail"]
    assert "cannot read" in rep["batch/unreadable.ipynb"]["detail"]
    assert "no notebooks" in rep["empty"]["detail"]
    # Executed notebooks mirror the tree; the error is recorded in the output.
    import nbformat
    out = nbformat.read(jup.work / "run-output" / "batch" / "exception.ipynb", as_version=4)
    assert out.cells[2].outputs[0]["ename"] == "ZeroDivisionError"
    assert not (jup.work / "run-output" / "batch" / "malformed.ipynb").exists()
    # The table and the CSV say the same.
    for name, status in st.items():
        assert any(line.startswith(name) and status in line for line in r.stdout.splitlines()), (name, r.stdout)
    with open(jup.work / "report.csv", newline="") as f:
        rows = {row["notebook"]: row for row in csv.DictReader(f)}
    assert {k: v["status"] for k, v in rows.items()} == st
    assert rows["batch/exception.ipynb"]["cell"] == "2" and rows["batch/exception.ipynb"]["ename"] == "ZeroDivisionError"
    assert "9 notebooks: 1 ok, 8 failed" in r.stdout, r.stdout
    assert_nothing_left(jup, before)
    assert empty.is_dir()


# ------------------------------------------------------------------ stopping


def start_loops(jup, n: int = 3) -> subprocess.Popen:
    d = jup.mkdir(jup.work / "loops")
    for i in range(n):
        jup.write(d / f"l{i}.ipynb", nb_text(["import time\nwhile True:\n    time.sleep(0.05)"]))
    return subprocess.Popen(jup.argv([jup.tools.ik, "run", "-j", "2", "--kernel", KERNEL, "loops"]),
                            cwd=jup.work, env=jup.env(run_env(jup)), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_running_kernels(jup, n: int, timeout: float = 120):
    launcher = str(jup.tools.launcher)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kernels = [p for p in processes_matching([launcher]) if str(jup.base) in p[1]]
        if len(kernels) >= n:
            return kernels
        time.sleep(0.2)
    raise AssertionError(f"{n} kernels did not start within {timeout}s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_stop_mid_batch_leaves_nothing(jup, tools, sig):
    install(jup)
    before, before_tmp = run_dirs(jup), tmp_json(jup)
    p = start_loops(jup)
    try:
        wait_running_kernels(jup, 2)
        assert run_dirs(jup) - before, "the run made no runtime directory in XDG_RUNTIME_DIR"
        time.sleep(3)  # into the first cell
        os.kill(p.pid, sig)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    assert p.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), f"{p.returncode}\n{out}\n{err}"
    if sig == signal.SIGINT:
        rep = read_report(jup.work / "run-output" / "report.jsonl")
        assert sorted(v["status"] for v in rep.values()) == ["interrupted", "interrupted"], rep
        assert "2 notebooks: 0 ok, 2 failed (2 interrupted)" in out, out + err
        assert "stopping" in err
    assert_nothing_left(jup, before, before_tmp)


# ------------------------------------------------------------------ a kernel port taken at start

# argv[0] of the kernelspec `run-port-taken`: named isolated-kernel-launcher (so
# `run` takes the kernelspec as isolated), it binds the hb port of the
# connection file it is given, as another process could between the worker
# choosing the ports and the launcher binding them, on its first TAKES starts
# (a child holds the port; its pid goes into the `taken` file), then execs the
# real launcher with the same arguments.
PORT_TAKER = """#!{python}
import json, os, socket, sys, time
here = os.path.dirname(os.path.abspath(__file__))
taken = os.path.join(here, "taken")
starts = sum(1 for _ in open(taken)) if os.path.exists(taken) else 0
if starts < {takes}:
    conn = next(a for a in sys.argv[1:] if a.endswith(".json") and os.path.isfile(a))
    with open(conn) as f:
        c = json.load(f)
    s = socket.socket()
    s.bind((c["ip"], c["hb_port"]))
    s.listen()
    holder = os.fork()
    if holder == 0:  # the other process: keeps the port (only) until the test ends it
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, s.fileno())
        os.closerange(s.fileno() + 1, 65536)
        time.sleep(300)
        os._exit(0)
    s.close()
    with open(taken, "a") as f:
        f.write(f"{{c['hb_port']}} {{holder}}\\n")
os.execv({launcher!r}, [{launcher!r}] + sys.argv[1:])
"""


def port_taking_kernelspec(jup, tools, takes: int) -> Path:
    """The installed KERNEL's kernelspec copied to `run-port-taken`, its argv[0] the PORT_TAKER."""
    src = jup.user_kernels / KERNEL
    d = jup.mkdir(jup.user_kernels / "run-port-taken")
    spec = json.loads((src / "kernel.json").read_text())
    wrap = jup.mkdir(jup.base / "port-taker") / "isolated-kernel-launcher"
    jup.write(wrap, PORT_TAKER.format(python=PYTHON, takes=takes, launcher=str(tools.launcher)), 0o755)
    spec["argv"][0] = str(wrap)
    spec["display_name"] = "port taken"
    jup.write(d / "kernel.json", json.dumps(spec, indent=1) + "\n")
    return wrap.parent / "taken"


def end_holders(taken: Path) -> list[int]:
    ports = []
    for line in taken.read_text().splitlines() if taken.exists() else []:
        port, pid = map(int, line.split())
        ports.append(port)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return ports


@pytest.mark.parametrize("takes", [1, 4])
def test_kernel_port_taken_before_the_launcher_binds(jup, tools, takes):
    """Another process binds one of the kernel's ports between the worker
    choosing them and the launcher binding them (seen in CI under -j 2): the
    notebook had not run, so run starts it again with other ports and says
    so, up to three times; after that the verdict is could-not-start with the
    launcher's reason. One record per notebook either way."""
    install(jup)
    taken = port_taking_kernelspec(jup, tools, takes)
    before = run_dirs(jup)
    d = jup.mkdir(jup.work / "ports")
    jup.write(d / "nb.ipynb", nb_text(["print(6 * 7)"]))
    try:
        r = jup.ik("run", "--kernel", "run-port-taken", "ports", cwd=jup.work, env=run_env(jup), timeout=300)
    finally:
        ports = end_holders(taken)
    assert len(ports) == min(takes, 4), (ports, str(r))  # the collisions happened, one per start
    assert len(set(ports)) == len(ports), ports  # each new start picked another port
    rep = read_report(jup.work / "run-output" / "report.jsonl")
    assert list(rep) == ["ports/nb.ipynb"], rep
    again = [line for line in r.stderr.splitlines() if "starting its kernel again with other ports" in line]
    if takes == 1:
        assert r.returncode == 0 and rep["ports/nb.ipynb"]["status"] == "ok", str(r)
        assert len(again) == 1 and f"bind the hb channel at tcp://127.0.0.1:{ports[0]}: Address already in use" \
            in again[0], str(r)
        import nbformat
        out = nbformat.read(jup.work / "run-output" / "ports" / "nb.ipynb", as_version=4)
        assert out.cells[1].outputs[0]["text"] == "42\n", out.cells[1]
    else:
        assert r.returncode == 1 and rep["ports/nb.ipynb"]["status"] == "could-not-start", str(r)
        assert len(again) == 3, str(r)
        assert f":{ports[-1]}: Address already in use" in rep["ports/nb.ipynb"]["detail"], rep
    assert_nothing_left(jup, before)


# ------------------------------------------------------------------ resume


def test_resume_skips_ok_for_same_content(jup, tools):
    install(jup)
    d = jup.mkdir(jup.work / "nbs")
    jup.write(d / "good.ipynb", nb_text(["print('good')"]))
    jup.write(d / "bad.ipynb", nb_text(["raise ValueError('bad')"]))
    r1 = jup.ik("run", "--kernel", KERNEL, "nbs", cwd=jup.work, timeout=300)
    assert r1.returncode == 1, str(r1)
    r2 = jup.ik("run", "--resume", "--kernel", KERNEL, "nbs", cwd=jup.work, timeout=300)
    assert r2.returncode == 1, str(r2)
    rep = read_report(jup.work / "run-output" / "report.jsonl")
    assert rep["nbs/good.ipynb"]["resumed"] is True and rep["nbs/good.ipynb"]["status"] == "ok", rep
    assert rep["nbs/bad.ipynb"]["resumed"] is False and rep["nbs/bad.ipynb"]["status"] == "error", rep
    assert "start    nbs/good.ipynb" not in r2.stderr and "start    nbs/bad.ipynb" in r2.stderr, str(r2)
    # A changed notebook runs again; a fixed one turns ok; then all is resumed.
    jup.write(d / "good.ipynb", nb_text(["print('changed')"]))
    jup.write(d / "bad.ipynb", nb_text(["print('fixed')"]))
    r3 = jup.ik("run", "--resume", "--kernel", KERNEL, "nbs", cwd=jup.work, timeout=300)
    assert r3.returncode == 0, str(r3)
    assert "start    nbs/good.ipynb" in r3.stderr and "start    nbs/bad.ipynb" in r3.stderr, str(r3)
    r4 = jup.ik("run", "--resume", "--kernel", KERNEL, "nbs", cwd=jup.work, timeout=300)
    assert r4.returncode == 0 and "start " not in r4.stderr, str(r4)
    assert all(v["resumed"] for v in read_report(jup.work / "run-output" / "report.jsonl").values())


# ------------------------------------------------------------------ usage


def test_usage_errors_and_dry_run(jup, tools):
    d = jup.mkdir(jup.work / "nbs")
    jup.write(d / "a.ipynb", nb_text(["1"]))
    jup.write(d / ".ipynb_checkpoints" / "a-checkpoint.ipynb", nb_text(["1"]))
    r = jup.ik("run", "missing-dir")
    assert r.returncode == 2 and "missing-dir: No such file or directory" in r.stderr, str(r)
    assert len(r.stderr.strip().splitlines()) == 1, str(r)
    r = jup.ik("run", "--kernel", "no-such-kernel", "nbs")
    assert r.returncode == 2 and "no kernelspec named 'no-such-kernel'" in r.stderr, str(r)
    r = jup.ik("run", "--share", "3/3", "nbs")
    assert r.returncode == 2 and "--share 3/3" in r.stderr, str(r)
    r = jup.ik("run", "--memory", "lots", "nbs")
    assert r.returncode == 2 and "--memory" in r.stderr, str(r)
    r = jup.ik("run", "--dry-run", "-j", "3", "--memory", "1G", "-o", "/tmp/elsewhere", "nbs")
    assert r.returncode == 0, str(r)
    plan = json.loads(r.stdout)
    assert plan["slots"] == 3 and plan["kernel_options"] == ["--memory", "1G"]
    assert [n["output"] for n in plan["notebooks"]] == ["/tmp/elsewhere/nbs/a.ipynb"], plan
    assert plan["notebooks"][0]["workdir"] == str(d)
    assert not Path("/tmp/elsewhere").exists()
    r = jup.ik("run", "--help")
    assert r.returncode == 0 and "Examples:" in r.stdout and "--notebook-timeout" in r.stdout


def test_allow_errors_inplace_notebook_timeout(jup, tools):
    install(jup)
    d = jup.mkdir(jup.work / "nbs")
    jup.write(d / "raises.ipynb", nb_text(["raise ValueError('first')", "print('after')", "1/0"]))
    jup.write(d / "slow.ipynb", nb_text(["import time", "time.sleep(120)", "print('never')"]))
    r = jup.ik("run", "-j", "2", "--kernel", KERNEL, "--allow-errors", "--inplace", "--notebook-timeout", "15s",
               "nbs", cwd=jup.work, timeout=300)
    assert r.returncode == 1, str(r)
    rep = read_report(jup.work / "run-output" / "report.jsonl")
    raises, slow = rep["nbs/raises.ipynb"], rep["nbs/slow.ipynb"]
    assert (raises["status"], raises["errors"], raises["cell"], raises["ename"]) == ("ok", 2, 1, "ValueError"), raises
    assert slow["status"] == "timeout" and slow["cell"] == 2 and "--notebook-timeout" in slow["detail"], slow
    # In place: the inputs now hold their outputs.
    import nbformat
    nb = nbformat.read(d / "raises.ipynb", as_version=4)
    assert nb.cells[2].outputs[0]["text"] == "after\n", nb.cells[2]
    assert raises["output"] == str(d / "raises.ipynb")
    assert "2 cells raised, first cell 1: ValueError" in r.stdout, r.stdout


# ------------------------------------------------------------------ pooled kernelspec


def pool_status(jup, env) -> dict:
    r = jup.ik("pool", "status", "--json", env=env)
    return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else {}


def run_pools(jup, env) -> list[dict]:
    """The daemon's pools that belong to a run (`pool status` names the run)."""
    return [p for p in pool_status(jup, env).get("pools", []) if p.get("run")]


def pool_run_processes(run_pid: int) -> list[int]:
    """Processes of the run with pid RUN_PID that carry its pool token
    (IK_POOL_RUN=<pid>-...): its workers, their launchers, and the helpers of
    its pool (the daemon starts them with the run's environment)."""
    needle = f"IK_POOL_RUN={run_pid}-".encode()
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{d}/environ").read_bytes():
                    found.append(int(d))
    return found


def alive(pids) -> list[int]:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":
                out.append(pid)
    return out


@contextlib.contextmanager
def pooled_kernelspec(jup, tools, size: int = 1):
    """A kernelspec `run-pooled` with a pool of SIZE, the waiter where the
    launcher looks for it, and a private XDG_RUNTIME_DIR (the daemon's
    socket); the daemon is stopped afterwards."""
    import tempfile
    install_pool_waiter(tools.root)
    xdg = jup.chown(Path(tempfile.mkdtemp(prefix="ikr-", dir="/tmp")))  # short: a socket path
    env = {"XDG_RUNTIME_DIR": str(xdg)}
    try:
        r = jup.ik("install", "--user", "--name", "run-pooled", "--pool", str(size), "--no-check")
        assert r.returncode == 0, str(r)
        yield env
    finally:
        jup.ik("pool", "stop", env=env)
        shutil.rmtree(xdg, ignore_errors=True)


def pool_log(env) -> str:
    log = Path(env["XDG_RUNTIME_DIR"]) / "isolated-kernel" / "pool.log"
    return log.read_text()[-3000:] if log.exists() else ""


def test_run_pool_sized_by_jobs_first_kernels_pooled_ends_with_run(jup, tools):
    """`run -j 2 --memory 1G` on a pooled kernelspec with a daemon running:
    the run gets a pool of its own launcher argv (the kernelspec's plus the
    limit) sized by -j, not the kernelspec's 1; every kernel of the run,
    the first two included, is claimed from it (none cold), the limit holds
    in them (a memory bomb is stopped), `pool status` shows the pool as the
    run's, and when the run returns its pool, its sandboxes and everything
    carrying its token are gone while the kernelspec's own pool is untouched."""
    with pooled_kernelspec(jup, tools, size=1) as env:
        r = jup.ik("pool", "start", env=env)
        assert r.returncode == 0, str(r)
        deadline = time.monotonic() + 120
        # The kernelspec's own pool, filled by the scan: a sandbox measured,
        # so the run's pool may start two at once (the memory cap's rule).
        while not any(p["ready"] for p in pool_status(jup, env).get("pools", []) if not p.get("run")):
            assert time.monotonic() < deadline, f"the kernelspec's pool did not fill: {pool_status(jup, env)}"
            time.sleep(0.3)
        own = [p for p in pool_status(jup, env)["pools"] if not p.get("run")]
        own_helpers = {w["helper_pid"] for p in own for w in p["waiting"]}
        d = jup.mkdir(jup.work / "nbs")
        for i in range(3):
            jup.write(d / f"s{i}.ipynb", nb_text(["import time; time.sleep(4)", f"print({i})"]))
        jup.write(d / "z-bomb.ipynb", nb_text(["a = []\nwhile True:\n    a.append(bytearray(64 << 20))"]))
        cmd = [jup.tools.ik, "run", "--kernel", "run-pooled", "--memory", "1G", "--timeout", "60s", "-j", "2", "nbs"]
        p = subprocess.Popen(jup.argv(cmd), cwd=jup.work, env=jup.env(env), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        seen, pids, text = None, set(), ""
        try:
            deadline = time.monotonic() + 120
            while p.poll() is None and time.monotonic() < deadline:
                for rp in run_pools(jup, env):
                    assert rp["run"]["pid"] == p.pid, rp
                    assert "--memory" in rp["spec"] and "1G" in rp["spec"], rp
                    if seen is None:  # the first view: before any kernel started
                        seen, text = rp, jup.ik("pool", "status", env=env).stdout
                    pids |= {w[k] for w in rp["waiting"] for k in ("helper_pid", "program_pid")}
                pids |= set(pool_run_processes(p.pid))
                time.sleep(0.1)
            out, err = p.communicate(timeout=300)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
        assert p.returncode == 1, f"{p.returncode}\n{out}\n{err}"
        assert seen is not None, f"no pool of the run was seen\n{err}"
        assert seen["size"] == 2, seen  # -j 2, not the kernelspec's pool 1
        assert f"the pool of 'isolated-kernel run' pid {p.pid} (sized by its -j; ends with it)" in text, text
        rep = read_report(jup.work / "run-output" / "report.jsonl")
        assert {k: v["status"] for k, v in rep.items()} == {
            "nbs/s0.ipynb": "ok", "nbs/s1.ipynb": "ok", "nbs/s2.ipynb": "ok", "nbs/z-bomb.ipynb": "memory-limit"}, rep
        assert rep["nbs/z-bomb.ipynb"]["peak_memory_bytes"] <= (1 << 30) + (64 << 20), rep["nbs/z-bomb.ipynb"]
        # Every kernel, the first two included, was a waiting sandbox of the run's pool.
        assert "4 of 4 kernels came from the run's pool" in err, f"{err}\n--- pool.log\n{pool_log(env)}"
        # Gone when the run returned: no pool of a run, none of its processes.
        assert run_pools(jup, env) == [], pool_status(jup, env)
        # (a claimed kernel's helper may take a moment after its kernel's exit notice)
        deadline = time.monotonic() + 5
        while alive(pids) or pool_run_processes(p.pid):
            assert time.monotonic() < deadline, (pids, alive(pids), pool_run_processes(p.pid))
            time.sleep(0.1)
        assert pids
        after = [p for p in pool_status(jup, env)["pools"] if not p.get("run")]
        assert {w["helper_pid"] for p in after for w in p["waiting"]} == own_helpers, (own, after)


def test_run_pool_gone_after_sigkill_of_the_run(jup, tools):
    """With no daemon running, `run -j 2` starts one and holds a pool of 2;
    its first kernel is pooled (it waits for the sandbox already starting
    rather than start cold). SIGKILL of the run mid-batch: the daemon sees
    the run's connection hang up and ends the run's pool; nothing of the run
    is left (waiting sandboxes, helpers, workers, launchers, kernels)."""
    with pooled_kernelspec(jup, tools, size=1) as env:
        d = jup.mkdir(jup.work / "loops")
        for i in range(3):
            jup.write(d / f"l{i}.ipynb", nb_text(["import time\nwhile True:\n    time.sleep(0.05)"]))
        cmd = [jup.tools.ik, "run", "--kernel", "run-pooled", "-j", "2", "loops"]
        p = subprocess.Popen(jup.argv(cmd), cwd=jup.work, env=jup.env(env), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        pids = set()
        try:
            deadline = time.monotonic() + 120
            while True:
                assert p.poll() is None, p.communicate()
                assert time.monotonic() < deadline, f"the run's pool did not claim and refill: {pool_status(jup, env)}"
                rps = run_pools(jup, env)
                for rp in rps:
                    assert rp["run"]["pid"] == p.pid, rp
                    pids |= {w[k] for w in rp["waiting"] for k in ("helper_pid", "program_pid")}
                pids |= set(pool_run_processes(p.pid))
                # Two kernels running, the third notebook's sandbox waiting.
                # (size 1: shrunk once both kernels are up, one notebook left to start)
                if rps and rps[0]["claimed"] >= 1 and rps[0]["claimed"] + rps[0]["refused"] >= 2 and \
                        rps[0]["ready"] and rps[0]["size"] == 1:
                    break
                time.sleep(0.2)
            assert rps[0]["claimed"] >= 1, rps  # the first kernel was pooled
            os.kill(p.pid, signal.SIGKILL)
            p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
        deadline = time.monotonic() + 15
        while run_pools(jup, env) or alive(pids) or pool_run_processes(p.pid):
            assert time.monotonic() < deadline, \
                f"left behind: {run_pools(jup, env)}, {alive(pids)}, {pool_run_processes(p.pid)}\n{pool_log(env)}"
            time.sleep(0.2)
        assert pool_status(jup, env)["running"], "the daemon itself stays (idle timeout)"
