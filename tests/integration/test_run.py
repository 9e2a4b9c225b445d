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

from kit.common import PYTHON, processes_matching

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


def run_pool(jup, env) -> dict:
    """The daemon's pool of this run's launcher argv: the kernelspec's plus --memory 1G."""
    pools = [p for p in pool_status(jup, env).get("pools", []) if "1G" in p["spec"] and "--memory" in p["spec"]]
    return pools[0] if pools else {}


def test_run_limits_get_pooled_kernels_and_hold(jup, tools):
    """`run --memory` on a kernelspec with a pool: the run's launcher argv
    (the kernelspec's plus the limit) gets a pool of its own in the user's
    daemon, of the kernelspec's size; once it is filled the run's kernels are
    claimed from it, and the limit holds in them (a memory bomb is stopped)."""
    import tempfile
    waiter = tools.root / "share" / "pool" / "pool_waiter.py"  # where the launcher looks: bin/../share/pool/
    waiter.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "share" / "pool" / "pool_waiter.py", waiter)
    for p in (waiter.parent, waiter):
        p.chmod(0o755 if p.is_dir() else 0o644)
    xdg = jup.chown(Path(tempfile.mkdtemp(prefix="ikr-", dir="/tmp")))  # short: a socket path
    env = {"XDG_RUNTIME_DIR": str(xdg)}
    try:
        r = jup.ik("install", "--user", "--name", "run-pooled", "--pool", "2", "--no-check")
        assert r.returncode == 0, str(r)
        d = jup.mkdir(jup.work / "nbs")
        jup.write(d / "first.ipynb", nb_text(["print('first')"]))
        common = ["--kernel", "run-pooled", "--memory", "1G", "--timeout", "60s", "-j", "1"]
        # The first kernel starts cold and the daemon with it; the next one
        # (cold too) makes the pool of this argv, of the kernelspec's size.
        r = jup.ik("run", *common, "-o", "out1", "nbs", cwd=jup.work, env=env, timeout=300)
        assert r.returncode == 0, str(r)
        deadline = time.monotonic() + 60
        while "pools" not in pool_status(jup, env):
            assert time.monotonic() < deadline, "no pool daemon was started"
            time.sleep(0.5)
        assert run_pool(jup, env) == {}, pool_status(jup, env)
        r = jup.ik("run", *common, "-o", "out1", "nbs", cwd=jup.work, env=env, timeout=300)
        assert r.returncode == 0, str(r)
        deadline = time.monotonic() + 120
        while run_pool(jup, env).get("ready", 0) < 2:
            assert time.monotonic() < deadline, f"the run's pool did not fill: {pool_status(jup, env)}"
            time.sleep(0.5)
        before = run_pool(jup, env)["claimed"]
        jup.write(d / "ok.ipynb", nb_text(["x = 6 * 7", "print(x)"]))
        jup.write(d / "bomb.ipynb", nb_text(["a = []\nwhile True:\n    a.append(bytearray(64 << 20))"]))
        (d / "first.ipynb").unlink()
        r = jup.ik("run", *common, "-o", "out2", "nbs", cwd=jup.work, env=env, timeout=300)
        assert r.returncode == 1, str(r)
        rep = read_report(jup.work / "out2" / "report.jsonl")
        assert {k: v["status"] for k, v in rep.items()} == \
            {"nbs/ok.ipynb": "ok", "nbs/bomb.ipynb": "memory-limit"}, rep
        # Both kernels were waiting sandboxes of the run's argv (2 ready: no cold start).
        log = xdg / "isolated-kernel" / "pool.log"
        assert run_pool(jup, env)["claimed"] - before == 2, \
            f"{pool_status(jup, env)}\n--- pool.log\n{log.read_text()[-3000:] if log.exists() else ''}"
        assert rep["nbs/bomb.ipynb"]["peak_memory_bytes"] <= (1 << 30) + (64 << 20), rep["nbs/bomb.ipynb"]
    finally:
        jup.ik("pool", "stop", env=env)
        shutil.rmtree(xdg, ignore_errors=True)
