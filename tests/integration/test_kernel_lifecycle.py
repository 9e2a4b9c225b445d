"""isolated-kernel-launcher follows its client and tells it why its kernel died.

Client gone: `jupyter run`, a SIGKILLed `jupyter console` (idle and busy
kernel) and a SIGKILLed Python process holding a KernelManager leave no
launcher, sandbox init or kernel behind after 2 s; a restart from the same
client and `--existing` clients coming and going never stop the kernel.
Kernel killed: the client gets "Kernel stopped: <why>" as iopub stderr of the
running cell (jupyter_client, nbclient/nbconvert's ExecutePreprocessor).
Root and unprivileged user, cold and pooled (see tests/kit/kernel.py): a
pooled kernel is found by its command line as a cold one is (it reads the
same), and its helper and sandbox init, whose command lines name nothing of
the test, are counted as the daemon's helpers beyond its waiting sandboxes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import textwrap
import time

import pytest

from kit.common import PYTHON, processes_matching
from kit.kernel import (Cell, KERNEL, START_TIMEOUT, is_kernel, run_cell, scenario, scenario_main, start_kernel,
                        step, stop_kernel)

GONE_WITHIN = 2.0  # the bound: client gone -> launcher, init and kernel gone
SLACK = 1.0        # scheduling on a loaded 2-core machine, on top of the bound when waiting


# --------------------------------------------------------------- helpers


def jupyter_path(h) -> str:
    """The test kernelspecs of H's kind (cold or pooled)."""
    return str(h.session.pooled_jupyter_path if h.pooled else h.session.jupyter_path)


def extra_kernelspecs(h, **specs: list[str]) -> dict:
    """Kernelspecs NAME -> launcher options under this test's files, of H's kind
    (pooled: their pools filled); returns the env that finds them."""
    d = h.mkdir(h.base / "jupyter")
    h.mkdir(d / "kernels")
    for name, opts in specs.items():
        k = h.mkdir(d / "kernels" / name)
        spec = {"argv": h.kernelspec_argv(*opts), "display_name": name, "language": "python",
                "interrupt_mode": "signal", "metadata": {}}
        h.write(k / "kernel.json", json.dumps(spec))
    env = {"JUPYTER_PATH": f"{d}:{jupyter_path(h)}"}
    h.pool_ready_argv(*(h.kernelspec_argv(*o) for o in specs.values()), env=env)
    return env


def ours(h) -> list[tuple[int, str]]:
    """Our launcher, sandbox init and kernel (the clients are gone when this is asked);
    pooled: the claiming launcher and the kernel (both name our runtime dir), and the
    helpers (with their sandbox inits) of the kernels claimed and still running."""
    procs = processes_matching([str(h.launcher), str(h.runtime)])
    return procs + (h.daemon.claimed_still_running() if h.pooled else [])


def wait_gone(h, since: float) -> tuple[float, list]:
    """Seconds from SINCE until none of ours is left (or what is left after the bound + slack)."""
    while time.monotonic() - since < GONE_WITHIN + SLACK:
        if not ours(h):
            return time.monotonic() - since, []
        time.sleep(0.02)
    return time.monotonic() - since, ours(h)


def kernel_running(h, timeout: float = START_TIMEOUT) -> list:
    """Waits until a launcher and a kernel of this test run; returns them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = ours(h)
        if any(is_kernel(cmd) for _, cmd in procs):
            return procs
        time.sleep(0.1)
    pytest.fail(f"no kernel started within {timeout}s")


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def assert_gone(h, since: float, what: str):
    took, left = wait_gone(h, since)
    assert not left, f"{what}: still running {took:.1f}s later: {left}"
    assert took <= GONE_WITHIN, f"{what}: launcher, init and kernel took {took:.2f}s to go (bound {GONE_WITHIN}s)"


# --------------------------------------------------------------- the client goes


def test_jupyter_run_leaves_nothing_and_closes_the_pipeline(khost):
    """`jupyter run` (jupyter_client's RunApp; Debian ships no jupyter-run script) piped into a reader."""
    h = khost
    script = h.write(h.workdir / "hello.py", f"print('run says {h.token}')\n")
    # RunApp appends the script to the kernel argv: a pool of its own (pooled: filled first)
    h.pool_ready_argv([*h.spec_argv(KERNEL), str(script)])
    err = h.private / "run.err"
    cmd = h.prefix() + [PYTHON, "-c", "from jupyter_client.runapp import main; main()",
                        "--kernel", KERNEL, str(script)]
    with open(err, "w") as ferr:
        p = subprocess.Popen(cmd, cwd=h.workdir, env=h.env(), stdout=subprocess.PIPE, stderr=ferr,
                             start_new_session=True)
    try:
        p.wait(timeout=START_TIMEOUT + 60)
        exited = time.monotonic()
        # The pipe ends when every writer is gone: jupyter run, launcher, init, kernel.
        out, eof_at = b"", None
        fd = p.stdout.fileno()
        while time.monotonic() - exited < GONE_WITHIN + SLACK:
            if select.select([fd], [], [], 0.05)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    eof_at = time.monotonic()
                    break
                out += chunk
    finally:
        p.kill()
        p.stdout.close()
    log = err.read_text()
    assert f"run says {h.token}" in out.decode(), (out, log)
    assert eof_at is not None, f"the pipeline still hangs {GONE_WITHIN + SLACK}s after jupyter run exited:\n{log}"
    assert eof_at - exited <= GONE_WITHIN, f"the pipeline ended {eof_at - exited:.2f}s after jupyter run"
    assert_gone(h, exited, "after jupyter run")
    assert "is gone: stopping the kernel" in log, log


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_sigkill_of_jupyter_console(khost, busy):
    import pexpect
    h = khost
    cmd = h.prefix() + [PYTHON, "-m", "jupyter_console", "--kernel", KERNEL, "--simple-prompt"]
    child = pexpect.spawn(cmd[0], cmd[1:], cwd=str(h.workdir), env=h.env(), encoding="utf-8",
                          timeout=START_TIMEOUT, dimensions=(40, 200))
    try:
        child.expect(r"In \[\d+\]: ")
        procs = kernel_running(h)
        if busy:
            child.sendline("while True: pass")
            kernel = next(p for p, cmd in procs if is_kernel(cmd))
            before = cpu_ticks(kernel)
            time.sleep(1.0)
            assert cpu_ticks(kernel) - before > 5, "the kernel is not busy"
        os.kill(child.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert_gone(h, killed, f"after SIGKILL of jupyter console ({'busy' if busy else 'idle'} kernel)")
    finally:
        child.close(force=True)


# Written next to the session's copy of kit/ (h.session.scripts), so its import needs no path set-up.
HOLDER = """
import time
from kit.kernel import start_kernel
km, kc = start_kernel({kernel!r})
if {busy!r}:
    kc.execute("while True: pass")
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
@pytest.mark.parametrize("net", ["relay", "share-net"])
def test_sigkill_of_a_kernel_manager_holder(khost, busy, net):
    """A Python process holding a KernelManager dies; with --share-net and tcp there is no relay, same bound."""
    h = khost
    if h.pooled and net == "share-net":
        pytest.skip("a --share-net tcp kernel is never pooled: it binds the host's ports itself (docs/pool.md)")
    env = extra_kernelspecs(h, **({"sharenet": ["--share-net"]} if net == "share-net" else {}))
    kernel = KERNEL if net == "relay" else "sharenet"
    holder = h.session.scripts / f"holder-{h.token}.py"
    holder.write_text(HOLDER.format(busy=busy, kernel=kernel))
    holder.chmod(0o644)
    p = subprocess.Popen(h.prefix() + [PYTHON, holder], cwd=h.workdir, env=h.env(env), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ready = select.select([p.stdout], [], [], START_TIMEOUT + 30)[0] and p.stdout.readline()
        assert ready == "ready\n", f"the holder did not start its kernel: {ready!r}"
        kernel_running(h)
        if busy:
            time.sleep(0.5)
        p.kill()
        killed = time.monotonic()
        p.wait()
        assert_gone(h, killed, f"after SIGKILL of the KernelManager holder ({net})")
    finally:
        p.kill()
        p.stdout.close()


EXISTING_CLIENT = """
import sys
from jupyter_client import BlockingKernelClient
kc = BlockingKernelClient(connection_file=sys.argv[1])
kc.load_connection_file()
kc.start_channels()
kc.wait_for_ready(timeout=60)
kc.execute_interactive("print('existing ran')", timeout=60)
print("ran", flush=True)
if sys.argv[2] == "stay":
    import time
    time.sleep(600)
kc.stop_channels()
"""


@scenario
def restart_and_existing_clients(out):
    km, kc = start_kernel()
    try:
        with step(out, "first") as s:
            s["r"] = run_cell(kc, "print('first', flush=True)")
            s["launcher"] = km.provisioner.process.pid
        with step(out, "restart") as s:
            km.restart_kernel()  # a new launcher, started by this same process
            kc.wait_for_ready(timeout=START_TIMEOUT)
            s["launcher"] = km.provisioner.process.pid
            s["r"] = run_cell(kc, "print('after restart', flush=True)")
        with step(out, "existing") as s:
            conn = km.connection_file
            done = subprocess.run([PYTHON, "-c", EXISTING_CLIENT, conn, "exit"], capture_output=True,
                                  text=True, timeout=120)
            s["exit_client"] = done.stdout
            p = subprocess.Popen([PYTHON, "-c", EXISTING_CLIENT, conn, "stay"], stdout=subprocess.PIPE, text=True)
            s["killed_client"] = p.stdout.readline()
            p.kill()
            p.wait()
            time.sleep(GONE_WITHIN + SLACK)  # longer than a stop would take
            s["alive"] = km.is_alive()
            s["r"] = run_cell(kc, "print('still here', flush=True)")
    finally:
        stop_kernel(km, kc)


def test_restart_and_existing_clients_never_stop_the_kernel(khost):
    r = khost.scenario(__file__, "restart_and_existing_clients")
    assert r["first"]["r"]["stdout"] == "first\n"
    assert r["restart"]["launcher"] != r["first"]["launcher"]
    assert r["restart"]["r"]["stdout"] == "after restart\n"
    s = r["existing"]
    assert s["exit_client"].endswith("existing ran\nran\n") and s["killed_client"] == "existing ran\n", s
    assert s["alive"], "the kernel stopped when an --existing client went"
    assert s["r"]["stdout"] == "still here\n", s["r"]
    assert "is gone" not in r.run.stderr, r.run.stderr
    assert r.leftovers == []


@scenario
def unrelated_parent_pid(out, kernel, pid_file):
    """JPY_PARENT_PID names a process of our own that is no ancestor of the launcher; it ends."""
    stray = subprocess.Popen(["sleep", "300"])
    with open(pid_file, "w") as f:
        f.write(str(stray.pid))
    km, kc = start_kernel(kernel)
    try:
        with step(out, "before") as s:
            s["r"] = run_cell(kc, "print('before')")
        stray.kill()
        stray.wait()
        time.sleep(GONE_WITHIN + SLACK)  # what the client watch would take to stop the kernel
        with step(out, "after") as s:
            s["alive"] = km.is_alive()
            s["r"] = run_cell(kc, "print('after')")
    finally:
        stop_kernel(km, kc)


def test_jpy_parent_pid_that_is_no_ancestor_is_ignored(khost):
    """A JPY_PARENT_PID naming another process (stale, inherited, someone else's) does not stop the kernel
    when that process ends; the launcher follows its parent, the real client, instead."""
    h = khost
    d = h.mkdir(h.base / "stray")
    pid_file = d / "pid"
    k = h.mkdir(h.mkdir(h.mkdir(h.base / "jupyter-stray") / "kernels") / "stray")
    # A wrapper puts the stray pid in place of jupyter_client's own, then
    # becomes the launcher (whose parent stays the client).
    argv = ["/bin/sh", "-c", f'JPY_PARENT_PID=$(cat {pid_file}) exec "$0" "$@"', *h.kernelspec_argv("-v")]
    h.write(k / "kernel.json", json.dumps({"argv": argv, "display_name": "stray", "language": "python",
                                           "interrupt_mode": "signal", "metadata": {}}))
    env = {"JUPYTER_PATH": f"{h.base / 'jupyter-stray'}:{jupyter_path(h)}"}
    h.pool_ready_argv(h.kernelspec_argv("-v"), env=env)   # the pool is the launcher's argv's
    r = h.scenario(__file__, "unrelated_parent_pid", env=env, kernel="stray", pid_file=str(pid_file))
    assert r["before"]["r"]["stdout"] == "before\n"
    assert r["after"]["alive"], f"the kernel stopped when an unrelated process ended:\n{r.run.stderr}"
    assert r["after"]["r"]["stdout"] == "after\n"
    assert "is gone" not in r.run.stderr, r.run.stderr
    assert "is not an ancestor of the launcher: ignored" in r.run.stderr, r.run.stderr
    assert r.leftovers == []


# --------------------------------------------------------------- why it died


@scenario
def death_notice(out, kernel, code, wait, survives=False):
    """SURVIVES: the kernel should live on; a second cell shows it does (instead of
    giving it 10 s to die, which a living kernel always took)."""
    km, kc = start_kernel(kernel)
    try:
        with step(out, "cell") as s:
            # stop_on_error=False: else ipykernel aborts the next request (the second cell) after the error
            cell = Cell(kc, code, stop_on_error=not survives)
            cell.pump(wait, until=lambda c: "Kernel stopped" in c.text("stderr") and c.idle)
            s["cell"] = cell.summary()
            if survives:
                s["next"] = Cell(kc, "print('still here')").pump(wait).summary()
            deadline = time.monotonic() + (0 if survives else 10)
            while km.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            s["alive"] = km.is_alive()
    finally:
        stop_kernel(km, kc, now=True)


NOTEBOOK = """
import sys, nbformat
from nbconvert.preprocessors import ExecutePreprocessor
from nbclient.exceptions import DeadKernelError
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('before', flush=True)"),
                                     nbformat.v4.new_code_cell(sys.argv[2])])
ep = ExecutePreprocessor(kernel_name=sys.argv[1], timeout=120, allow_errors=True)
try:
    ep.preprocess(nb, {"metadata": {"path": "."}})
    print("NO-ERROR")
except DeadKernelError as e:
    print("DEAD", e)
nbformat.write(nb, sys.argv[3])
"""

SLEEP = "import time\nprint('started', flush=True)\ntime.sleep(300)"
# It keeps trying when --nproc refuses a fork: a bomb that stopped at the
# first refused fork would end the cell with an error (BlockingIOError)
# before the wall time, whichever process hit the limit first.
FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"


def test_wall_time_kill_reaches_jupyter_client(khost):
    h = khost
    env = extra_kernelspecs(h, walltime=["--wall-time", "6s"])
    r = h.scenario(__file__, "death_notice", env=env, kernel="walltime", code=SLEEP, wait=60)
    cell = r["cell"]["cell"]
    assert cell["stdout"] == "started\n"
    assert cell["stderr"] == "Kernel stopped: killed after the wall-time limit of 6s (--wall-time)\n", cell
    assert cell["idle"] and cell["reply"] is None
    assert not r["cell"]["alive"]
    assert r.leftovers == []


def test_signal_death_reaches_jupyter_client(khost):
    h = khost
    r = h.scenario(__file__, "death_notice", kernel=KERNEL, wait=60,
                   code="import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert r["cell"]["cell"]["stderr"] == "Kernel stopped: killed by signal 9 (SIGKILL)\n", r["cell"]["cell"]
    assert r.leftovers == []


@scenario
def forged_parent(out):
    """A real cell that dies, after someone without the key sent an execute_request of their own."""
    import zmq
    km, kc = start_kernel(KERNEL)
    go = os.path.abspath(f"go-{os.getpid()}")
    try:
        with step(out, "cell") as s:
            cell = Cell(kc, "import os, signal, time\nprint('started', flush=True)\n"
                            f"while not os.path.exists({go!r}):\n    time.sleep(0.02)\n"
                            "os.kill(os.getpid(), signal.SIGKILL)")
            cell.pump(60, until=lambda c: "started" in c.text("stdout"))
            # A local user on the client-facing shell port, without the key:
            # an unsigned execute_request of their own, after the real one.
            info = km.get_connection_info()
            forger = zmq.Context.instance().socket(zmq.DEALER)
            forger.linger = 2000
            forger.connect(f"tcp://{info['ip']}:{info['shell_port']}")
            header = {"msg_id": "forged", "msg_type": "execute_request", "session": "x", "username": "x",
                      "date": "2020-01-01T00:00:00Z", "version": "5.3"}
            forger.send_multipart([b"<IDS|MSG>", b"", json.dumps(header).encode(), b"{}", b"{}",
                                   json.dumps({"code": "1", "silent": False}).encode()])
            forger.close()  # linger: sent before close returns
            time.sleep(1.0)  # the relay passes it on within milliseconds
            open(go, "w").close()
            cell.pump(60, until=lambda c: "Kernel stopped" in c.text("stderr") and c.idle)
            s["cell"] = cell.summary()
    finally:
        stop_kernel(km, kc, now=True)
        with contextlib.suppress(OSError):
            os.unlink(go)


def test_forged_execute_request_does_not_take_the_notice(khost):
    """The exit notice's parent is the last execute_request signed with the key, not a forged later one."""
    h = khost
    r = h.scenario(__file__, "forged_parent")
    cell = r["cell"]["cell"]
    assert cell["stderr"] == "Kernel stopped: killed by signal 9 (SIGKILL)\n", cell
    assert cell["idle"], cell
    assert r.leftovers == []


def test_fork_bomb_under_nproc_then_wall_time(khost):
    h = khost
    if h.mode == "root":
        pytest.skip("root is exempt from RLIMIT_NPROC and this host has no cgroup pids controller: "
                    "a fork bomb as root would not be bounded")
    # RLIMIT_NPROC counts every process and thread of the user, the kernel's
    # own threads and other tests' included: room for those, not for a bomb.
    env = extra_kernelspecs(h, forkbomb=["--nproc", "200", "--wall-time", "10s"])
    r = h.scenario(__file__, "death_notice", env=env, kernel="forkbomb", code=FORK_BOMB, wait=60)
    cell = r["cell"]["cell"]
    assert "Kernel stopped: killed after the wall-time limit of 10s (--wall-time)\n" in cell["stderr"], cell
    assert r.leftovers == []


def test_memory_bomb_under_rlimit_is_an_error_not_a_notice(khost):
    """RLIMIT_AS turns a memory bomb into MemoryError: the kernel lives, so nothing is published."""
    h = khost
    env = extra_kernelspecs(h, membomb=["--limits", "rlimit", "--memory", "1G"])
    r = h.scenario(__file__, "death_notice", env=env, kernel="membomb", wait=60, survives=True,
                   code="l = []\nwhile True:\n    l.append(bytearray(10**7))")
    cell = r["cell"]["cell"]
    assert cell["reply"]["status"] == "error", cell
    assert "Kernel stopped" not in cell["stderr"], cell
    assert r["cell"]["alive"], "the kernel died of a memory bomb under RLIMIT_AS"
    after = r["cell"]["next"]
    assert after["reply"]["status"] == "ok" and after["stdout"] == "still here\n", after
    assert r.leftovers == []


@pytest.mark.parametrize("case", ["walltime", "signal"])
def test_nbconvert_shows_why_in_the_cell(khost, case):
    h = khost
    env = extra_kernelspecs(h, walltime=["--wall-time", "8s"])
    kernel, code, want = {
        "walltime": ("walltime", SLEEP, "Kernel stopped: killed after the wall-time limit of 8s (--wall-time)\n"),
        "signal": (KERNEL, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
                   "Kernel stopped: killed by signal 11 (SIGSEGV)\n"),
    }[case]
    nb_out = h.private / "out.ipynb"
    run = h.run([PYTHON, "-c", NOTEBOOK, kernel, code, nb_out], env=env, timeout=180)
    assert "DEAD" in run.stdout, run
    import nbformat
    nb = nbformat.read(str(nb_out), as_version=4)
    texts = [o.get("text", "") for o in nb.cells[1].outputs if o.get("output_type") == "stream"]
    assert want in texts, (nb.cells[1].outputs, run)
    assert h.leftovers(grace=5.0) == []


if __name__ == "__main__":
    scenario_main()
