"""isolated-kernel-launcher with a real jupyter_client (KernelManager +
BlockingKernelClient), as root and as the unprivileged test user.

The client side of each test runs in its own process (see tests/kit/kernel.py):
this file is also the client script, `python3 test_kernel.py --ik-scenario
NAME ARGS RESULT`. Scenarios record what the client saw; the tests assert.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import re
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from kit.common import PYTHON, fd_count, mount_table, pid_alive, processes_matching, wait_until
from kit.kernel import (Cell, HOST_PARAMS, KERNEL, START_TIMEOUT, _make_host, eval_json, new_connection_file, run_cell,
                        scenario, scenario_main, start_kernel, step, stop_kernel)
from kit.pool import claimed_kernels, client_status


INTERRUPT_ROUNDS = 12


def kernel_processes(connection_file: str) -> list[tuple[int, str]]:
    """ipykernel processes (host view) started with CONNECTION_FILE. A pooled
    host's client (IK_POOL_BIN set): the claimed kernels still running, whose
    helpers name nothing of the claim (one test at a time uses its user's daemon)."""
    if os.environ.get("IK_POOL_BIN"):
        return claimed_kernels(client_status)
    return [(p, c) for p, c in processes_matching([connection_file])
            if c.startswith(f"{PYTHON} -m ipykernel_launcher")]


# =========================================================== client scenarios


@scenario
def messaging(out):
    """One kernel through the whole message repertoire, then restart and shutdown."""
    t0 = time.monotonic()
    km, kc = start_kernel()
    token = os.environ["IK_TEST_TOKEN"]
    out["start"] = {"seconds": time.monotonic() - t0, "launcher_pid": km.provisioner.process.pid,
                    "connection_file": km.connection_file, "token": token}

    with step(out, "kernel_info") as s:
        s["msg"] = kc.kernel_info(reply=True, timeout=10)["content"]

    with step(out, "execute_result") as s:
        s.update(run_cell(kc, "6 * 7"))
        s["second"] = run_cell(kc, "[n * n for n in range(1, 4)]")

    with step(out, "streams") as s:
        s.update(run_cell(kc, "import sys\nprint('to stdout', 1)\nprint('to stderr', 2, file=sys.stderr)\n"
                              "sys.stdout.flush(); sys.stderr.flush()"))

    with step(out, "display") as s:
        s.update(run_cell(kc, "from IPython.display import display, HTML, Markdown\n"
                              "display(HTML('<b>bold</b>'))\n"
                              "h = display(Markdown('first'), display_id='ik-disp')\n"
                              "h.update(Markdown('second'))\n"
                              "display({'application/json': {'a': 1}, 'text/plain': 'json'}, raw=True)"))

    with step(out, "error") as s:
        # stop_on_error=False: ipykernel aborts requests that arrive right after
        # an error (stop_on_error), until its next loop turn; a sleep only
        # narrows that window, a loaded machine still hits it.
        s.update(run_cell(kc, "def ik_fail():\n    raise ValueError('bad value 42')\nik_fail()",
                          stop_on_error=False))
        s["after"] = run_cell(kc, "'still here'")

    with step(out, "input") as s:
        s.update(run_cell(kc, "name = input('Your name? ')\nprint('hello ' + name)", stdin=["isolated"]))
        s["getpass"] = run_cell(kc, "import getpass\npw = getpass.getpass('Password: ')\n"
                                    "print('length', len(pw))", stdin=["s3cret!"])

    with step(out, "raw_stdio") as s:
        # Writes to the kernel process's own fds 1 and 2: they reach the
        # launcher's stdout/stderr (the server log). ipykernel also forwards
        # them to iopub, asynchronously: the sleep keeps that inside this cell.
        s.update(run_cell(kc, f"import os, time\nos.write(1, b'ik-raw-stdout-{token}\\n')\n"
                              f"os.write(2, b'ik-raw-stderr-{token}\\n')\ntime.sleep(1)"))

    with step(out, "interrupt") as s:
        # stop_on_error=False: as after an error, ipykernel aborts requests that
        # arrive right after the KeyboardInterrupt reply; a plain kernel does too.
        c = Cell(kc, "import time\nprint('sleeping', flush=True)\ntime.sleep(60)\nprint('woke up')",
                 stop_on_error=False)
        c.pump(30, until=lambda c: "sleeping" in c.text())
        t = time.monotonic()
        km.interrupt_kernel()
        c.pump(45)
        s["seconds"] = time.monotonic() - t
        s.update(c.summary())
        s["after"] = run_cell(kc, "'alive after interrupt'")

    with step(out, "interrupt_once") as s:
        # Counts the SIGINTs the kernel receives per interrupt_kernel(), over
        # several rounds: a duplicate delivery can be timing-dependent.
        c = Cell(kc, "import signal, time\nik_hits, ik_counts = [], []\n"
                     "signal.signal(signal.SIGINT, lambda signum, frame: ik_hits.append(signum))\n"
                     f"for k in range({INTERRUPT_ROUNDS}):\n"
                     "    ik_hits.clear()\n"
                     "    print('armed', k, flush=True)\n"
                     "    t_end = time.monotonic() + 10\n"
                     "    while not ik_hits and time.monotonic() < t_end:\n"
                     "        time.sleep(0.01)\n"
                     "    time.sleep(0.3)\n"
                     "    ik_counts.append(len(ik_hits))\n"
                     "print('counts', ik_counts)")
        for k in range(INTERRUPT_ROUNDS):
            c.pump(30, until=lambda c: f"armed {k}\n" in c.text())
            km.interrupt_kernel()
        c.pump(60)
        s.update(c.summary())

    with step(out, "interrupt_message") as s:
        # interrupt_mode "message": an interrupt_request on the control channel
        # (stop_on_error=False: see "interrupt")
        c = Cell(kc, "import time\nprint('sleeping', flush=True)\ntime.sleep(60)\nprint('woke up')",
                 stop_on_error=False)
        c.pump(30, until=lambda c: "sleeping" in c.text())
        req = kc.session.msg("interrupt_request", {})
        kc.control_channel.send(req)
        s["control_reply"] = _control_reply(kc, req["header"]["msg_id"])
        c.pump(45)
        s.update(c.summary())

    with step(out, "control_kernel_info") as s:
        req = kc.session.msg("kernel_info_request", {})
        kc.control_channel.send(req)
        s["reply"] = _control_reply(kc, req["header"]["msg_id"])

    with step(out, "heartbeat") as s:
        time.sleep(1.5)  # at least one ping round (time_to_dead is 1 s)
        s["beating"] = kc.hb_channel.is_beating()

    with step(out, "large_messages") as s:
        # 4 MB each way through the relay
        s["to_kernel"] = run_cell(kc, "ik_big = '" + "x" * 4_000_000 + "'\nprint(len(ik_big))", timeout=60)
        s["to_kernel"]["code"] = None  # do not echo 4 MB into the result
        r = run_cell(kc, "print('y' * 4_000_000)", timeout=60)
        s["from_kernel_len"] = len(r["stdout"])
        s["from_kernel_only_y"] = set(r["stdout"]) == {"y", "\n"}
        s["after"] = run_cell(kc, "del ik_big\n'ok'")

    with step(out, "restart") as s:
        s["set"] = run_cell(kc, "ik_marker = 'before restart'")
        old = km.provisioner.process
        km.restart_kernel(now=False)
        s["old_pid"], s["old_returncode"], s["old_alive"] = old.pid, old.returncode, pid_alive(old.pid)
        s["new_pid"] = km.provisioner.process.pid
        kc.wait_for_ready(timeout=60)
        # stop_on_error=False: else ipykernel aborts a request that arrives just
        # after this NameError (its abort window), and "fresh" flakes as aborted.
        s["lookup"] = run_cell(kc, "ik_marker", stop_on_error=False)
        s["fresh"] = run_cell(kc, "print('after restart')")
        wait_until(lambda: len(kernel_processes(km.connection_file)) == 1, 5)
        s["kernels"] = kernel_processes(km.connection_file)

    with step(out, "restart_now") as s:
        old = km.provisioner.process
        km.restart_kernel(now=True)
        s["old_pid"], s["old_returncode"] = old.pid, old.returncode
        wait_until(lambda: not pid_alive(old.pid), 5)
        s["old_alive"] = pid_alive(old.pid)
        kc.wait_for_ready(timeout=60)
        s["after"] = run_cell(kc, "print('after forced restart')")
        wait_until(lambda: len(kernel_processes(km.connection_file)) == 1, 5)
        s["kernels"] = kernel_processes(km.connection_file)

    with step(out, "shutdown") as s:
        proc = km.provisioner.process
        conn = km.connection_file
        kc.stop_channels()
        t = time.monotonic()
        km.shutdown_kernel(now=False)
        s["seconds"] = time.monotonic() - t
        s["how"] = str(km._shutdown_status)
        s["pid"], s["returncode"] = proc.pid, proc.returncode
        s["launcher_alive"] = pid_alive(proc.pid)
        s["connection_file_exists"] = os.path.exists(conn)
        wait_until(lambda: not kernel_processes(conn), 2)
        s["kernels_left"] = kernel_processes(conn)


def _control_reply(kc, msg_id, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            m = kc.get_control_msg(timeout=0.5)
        except queue.Empty:
            continue
        if m["parent_header"].get("msg_id") == msg_id:
            return {"msg_type": m["msg_type"], "content": m["content"]}
    raise TimeoutError(f"no control reply to {msg_id} within {timeout}s")


@scenario
def autorestart(out):
    """What a Jupyter server does: an AsyncIOLoopKernelManager whose restarter
    brings the kernel back after it dies on its own."""
    import asyncio
    from jupyter_client.ioloop import AsyncIOLoopKernelManager

    async def main():
        km = AsyncIOLoopKernelManager(kernel_name=KERNEL, connection_file=new_connection_file(),
                                      shutdown_wait_time=20)
        await km.start_kernel(cwd=os.getcwd())
        restarted = asyncio.Event()
        km.add_restart_callback(restarted.set, "restart")  # needs the restarter: after start
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=START_TIMEOUT)
            with step(out, "crash") as s:
                old = km.provisioner.process
                s["old_pid"] = old.pid
                await kc.execute_interactive("ik_marker = 1", timeout=30)
                kc.execute("import os; os._exit(1)")
                t = time.monotonic()
                await asyncio.wait_for(restarted.wait(), 60)
                s["restart_seconds"] = time.monotonic() - t
                s["old_returncode"] = old.poll()
                # within the first stable_start_time the restarter picks new ports
                kc.stop_channels()
                kc = km.client()
                kc.start_channels()
                await kc.wait_for_ready(timeout=START_TIMEOUT)
                s["new_pid"] = km.provisioner.process.pid
                outputs = s["outputs"] = []
                r = await kc.execute_interactive("print('back', 'ik_marker' in globals())", timeout=30,
                                                 output_hook=lambda m: outputs.append(m["content"]))
                s["reply"] = r["content"]
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=False)

    asyncio.run(main())


PROBE = r'''
import json, os, socket
A = json.loads(%r)
res = {}
def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except Exception as e:
        return {"ok": False, "error": type(e).__name__, "errno": getattr(e, "errno", None), "msg": str(e)}
def tcp():
    s = socket.create_connection(("127.0.0.1", A["tcp_port"]), timeout=3)
    s.close()
    return "connected"
def abstract():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect("\0" + A["abstract"])
    s.close()
    return "connected"
def write_cwd():
    with open("written-inside.txt", "w") as f:
        f.write("written " + A["token"])
    return True
def write_home():
    with open(os.path.join(os.path.expanduser("~"), "inside-home-" + A["token"]), "w") as f:
        f.write("x")
    return True
def read(p):
    with open(p) as f:
        return f.read()
res["tcp"] = attempt(tcp)
res["abstract"] = attempt(abstract)
res["interfaces"] = [n for _, n in socket.if_nameindex()]
res["signal_host"] = attempt(lambda: os.kill(A["client_pid"], 0))
res["cwd"] = os.getcwd()
res["cwd_list"] = sorted(os.listdir("."))
res["input"] = attempt(lambda: read(A["input_name"]))
res["write"] = attempt(write_cwd)
res["home"] = os.path.expanduser("~")
res["home_list"] = attempt(lambda: sorted(os.listdir(os.path.expanduser("~"))))
res["secret"] = attempt(lambda: read(A["secret"]))
res["home_write"] = attempt(write_home)
res["runtime_list"] = attempt(lambda: sorted(os.listdir(A["runtime"])))
res["fake_conn"] = attempt(lambda: read(A["fake_conn"]))
res["own_conn"] = attempt(lambda: json.loads(read(A["conn"])))
res["uid"], res["gid"] = os.getuid(), os.getgid()
cmds = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            cmds[p] = read("/proc/%%s/cmdline" %% p).replace("\0", " ").strip()
        except OSError:
            pass
res["processes"] = cmds
res["env"] = sorted(os.environ)
res["jpy_parent_pid"] = os.environ.get("JPY_PARENT_PID")
res["shadow"] = os.path.exists("/etc/shadow")
print(json.dumps(res))
'''


@scenario
def isolation(out, **args):
    """Probes what the kernel can reach; records the host connection file around it."""
    os.environ["IK_SECRET_ENV"] = "client-environment-" + args["token"]
    km, kc = start_kernel()
    conn = km.connection_file
    with open(conn) as f:
        host_conn = f.read()
    args = dict(args, conn=conn, client_pid=os.getpid(), runtime=os.path.dirname(conn))
    with step(out, "probe") as s:
        s.update(eval_json(kc, PROBE % json.dumps(args)))
        s["connection_file"] = conn
    with step(out, "host_connection_file") as s:
        with open(conn) as f:
            s["unchanged"] = f.read() == host_conn
        s["content"] = json.loads(host_conn)
    stop_kernel(km, kc)


@scenario
def cycles(out, n=10):
    """N start/stop cycles; records per cycle and the client's open fds."""
    runtime = os.environ["JUPYTER_RUNTIME_DIR"]
    out["fds_before"] = fd_count()
    rows = out["cycles"] = []
    for i in range(n):
        row = {"i": i}
        rows.append(row)
        try:
            km, kc = start_kernel()
            proc = km.provisioner.process
            row["result"] = run_cell(kc, f"{i} + 1")["outputs"]
            conn = km.connection_file
            t = time.monotonic()
            stop_kernel(km, kc)
            row["shutdown_seconds"] = time.monotonic() - t
            row["how"] = str(km._shutdown_status)
            row["returncode"] = proc.returncode
            row["launcher_alive"] = pid_alive(proc.pid)
            row["connection_file_exists"] = os.path.exists(conn)
        except Exception:
            import traceback
            row["error"] = traceback.format_exc()
        gc.collect()  # jupyter_client's zmq contexts close when collected
        row["fds"] = fd_count()
        if sum("error" in r for r in rows) >= 3:
            break
    gc.collect()
    out["runtime_left"] = sorted(os.listdir(runtime))
    out["fds_after"] = fd_count()
    out["fd_targets"] = sorted(_fd_targets())


def _fd_targets():
    for fd in os.listdir("/proc/self/fd"):
        try:
            yield f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}"
        except OSError:
            pass


@scenario
def exit_after_shutdown(out, code):
    """Runs CODE (it registers an atexit handler), then a normal shutdown."""
    km, kc = start_kernel()
    proc = km.provisioner.process
    with step(out, "shutdown") as s:
        s["setup"] = run_cell(kc, code)["outputs"]
        kc.stop_channels()
        t = time.monotonic()
        km.shutdown_kernel()
        s["seconds"] = time.monotonic() - t
        s["how"] = str(km._shutdown_status)
        s["returncode"] = proc.returncode


@scenario
def shutdown_then_end(out, code, reply_file):
    """Runs CODE, sends shutdown_request itself; with REPLY_FILE, waits for
    the shutdown_reply and then creates that file (the kernel's atexit
    handler waits for it); records how the launcher ends."""
    km, kc = start_kernel()
    proc = km.provisioner.process
    with step(out, "shutdown") as s:
        s["setup"] = run_cell(kc, code)["outputs"]
        t = time.monotonic()
        if reply_file:
            s["reply"] = kc.shutdown(reply=True, timeout=30)["msg_type"]
            open(reply_file, "w").close()
        else:
            kc.shutdown()
        s["returncode"] = proc.wait(timeout=30)
        s["seconds"] = time.monotonic() - t
    kc.stop_channels()
    km.shutdown_kernel(now=True)


@scenario
def exit_status(out, code):
    """The kernel ends itself with CODE; records how the launcher ends."""
    km, kc = start_kernel()
    proc = km.provisioner.process
    conn = km.connection_file
    with step(out, "exit") as s:
        s["pid"] = proc.pid
        kc.execute(code)
        t = time.monotonic()
        s["returncode"] = proc.wait(timeout=30)
        s["seconds"] = time.monotonic() - t
        wait_until(lambda: not kernel_processes(conn), 2)
        s["kernels_left"] = kernel_processes(conn)
    kc.stop_channels()
    km.shutdown_kernel(now=True)


SPAWN = r'''
import subprocess, sys
t = %r
procs = [
    subprocess.Popen(["sleep", t[0]]),                                # a plain child
    subprocess.Popen(["sh", "-c", "sleep %%s; :" %% t[1]]),            # a grandchild
    subprocess.Popen(["setsid", "sleep", t[2]]),                        # left the process group
    subprocess.Popen(["sh", "-c", "(sleep %%s &) ; :" %% t[3]]),        # orphaned daemon
]
print("spawned", flush=True)
'''


@scenario
def kill_launcher(out, signame, tokens):
    """Kernel starts children; the launcher is killed with SIGNAME; records what is left."""
    km, kc = start_kernel()
    proc = km.provisioner.process
    conn = km.connection_file
    launcher = km.kernel_spec.argv[0]
    sig = getattr(signal, signame)
    with step(out, "kill") as s:
        s["spawn"] = run_cell(kc, SPAWN % (tokens,))
        markers = [f"sleep {t}" for t in tokens]
        wait_until(lambda: len(processes_matching(markers)) >= 4, 10)
        s["before"] = processes_matching(markers)
        os.kill(proc.pid, sig)
        t = time.monotonic()
        # Pooled: the launcher copy is also every waiting helper's; the claimed
        # kernel is counted by its helper (kernel_processes).
        pooled = bool(os.environ.get("IK_POOL_BIN"))
        everything = markers + [conn] + ([] if pooled else [launcher])

        def left():
            return processes_matching(everything) + (kernel_processes(conn) if pooled else [])
        wait_until(lambda: not left(), 2)
        s["left_at_2s"] = left()
        gone = wait_until(lambda: not left(), 10)
        s["gone_after"] = time.monotonic() - t if gone else None
        s["left_at_12s"] = left()
        try:
            s["returncode"] = proc.wait(timeout=5)
        except Exception as e:
            s["returncode"] = repr(e)
    kc.stop_channels()
    km.shutdown_kernel(now=True)


# =========================================================== tests: messaging


@pytest.fixture(scope="module", params=HOST_PARAMS)
def msg(request, ik_session):
    """The `messaging` scenario, run once per mode (cold and pooled) and shared by the tests below."""
    h = _make_host(request, ik_session, request.param)
    try:
        h.pool_ready()
        r = h.scenario(__file__, "messaging")
        h.check_claims(min_claims=3)  # start, restart, forced restart
        yield r
    finally:
        h.close()


def test_kernel_starts_and_reports_info(msg):
    info = msg["kernel_info"]["msg"]
    assert info["status"] == "ok"
    assert info["language_info"]["name"] == "python"
    assert info["implementation"] == "ipython"
    assert info["protocol_version"].startswith("5.")


def test_execute_result(msg):
    s = msg["execute_result"]
    assert s["reply"]["status"] == "ok", s
    results = [o for o in s["outputs"] if o["msg_type"] == "execute_result"]
    assert len(results) == 1, s
    assert results[0]["content"]["data"]["text/plain"] == "42"
    assert results[0]["content"]["execution_count"] == s["reply"]["execution_count"]
    second = [o for o in s["second"]["outputs"] if o["msg_type"] == "execute_result"]
    assert second and second[0]["content"]["data"]["text/plain"] == "[1, 4, 9]", s["second"]
    assert s["second"]["reply"]["execution_count"] == s["reply"]["execution_count"] + 1


def test_stdout_and_stderr_streams(msg):
    s = msg["streams"]
    assert s["reply"]["status"] == "ok", s
    assert s["stdout"] == "to stdout 1\n", s
    assert s["stderr"] == "to stderr 2\n", s


def test_kernel_process_output_reaches_launcher_stdio(msg):
    """Output written to the kernel's real fds 1/2 (bypassing ipykernel) reaches
    the launcher's stdout/stderr, i.e. the Jupyter server log."""
    s = msg["raw_stdio"]
    assert s["reply"]["status"] == "ok", s
    token = msg.data["start"]["token"]
    run = msg.run
    assert f"ik-raw-stderr-{token}" in run.stderr, f"kernel fd 2 output not in the client's stderr\n{msg.context()}"
    assert f"ik-raw-stdout-{token}" in run.stdout, f"kernel fd 1 output not in the client's stdout\n{run.stdout[-2000:]}"


def test_display_data_and_update(msg):
    s = msg["display"]
    assert s["reply"]["status"] == "ok", s
    kinds = [o["msg_type"] for o in s["outputs"]]
    assert kinds == ["display_data", "display_data", "update_display_data", "display_data"], s["outputs"]
    html, md, upd, raw = (o["content"] for o in s["outputs"])
    assert html["data"]["text/html"] == "<b>bold</b>"
    assert md["data"]["text/markdown"] == "first"
    assert md["transient"] == {"display_id": "ik-disp"}
    assert upd["data"]["text/markdown"] == "second"
    assert upd["transient"] == {"display_id": "ik-disp"}
    assert raw["data"]["application/json"] == {"a": 1}


def test_error_with_traceback(msg):
    s = msg["error"]
    reply = s["reply"]
    assert reply["status"] == "error", s
    assert reply["ename"] == "ValueError"
    assert reply["evalue"] == "bad value 42"
    errors = [o["content"] for o in s["outputs"] if o["msg_type"] == "error"]
    assert len(errors) == 1, s["outputs"]
    assert errors[0]["ename"] == "ValueError" and errors[0]["evalue"] == "bad value 42"
    tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(errors[0]["traceback"]))
    assert "ik_fail()" in tb and "raise ValueError" in tb, tb
    assert s["after"]["reply"]["status"] == "ok", "kernel unusable after an error"


def test_input_over_stdin(msg):
    s = msg["input"]
    assert s["reply"]["status"] == "ok", s
    assert s["input_requests"] == [{"prompt": "Your name? ", "password": False}], s
    assert s["stdout"] == "hello isolated\n", s
    g = s["getpass"]
    assert g["reply"]["status"] == "ok", g
    assert g["input_requests"] == [{"prompt": "Password: ", "password": True}], g
    assert g["stdout"] == "length 7\n", g


def test_interrupt_stops_sleep(msg):
    s = msg["interrupt"]
    assert s["reply"]["status"] == "error", s
    assert s["reply"]["ename"] == "KeyboardInterrupt", s
    assert "woke up" not in s["stdout"]
    # time.sleep(60) was cut short (generous bound, far below 60 s)
    assert s["seconds"] < 20, s
    assert s["after"]["reply"]["status"] == "ok", "kernel died after the interrupt"
    res = [o for o in s["after"]["outputs"] if o["msg_type"] == "execute_result"]
    assert res and res[0]["content"]["data"]["text/plain"] == "'alive after interrupt'"


def test_interrupt_delivers_exactly_one_sigint(msg):
    """jupyter_client interrupts with killpg() on the launcher's process group;
    the kernel must see exactly one SIGINT per interrupt."""
    s = msg["interrupt_once"]
    assert s["reply"]["status"] == "ok", s
    expected = f"counts {[1] * INTERRUPT_ROUNDS}\n"
    assert s["stdout"].endswith(expected), f"SIGINTs seen by the kernel per interrupt_kernel(): {s['stdout']!r}"


def test_interrupt_by_message(msg):
    s = msg["interrupt_message"]
    assert s["control_reply"]["msg_type"] == "interrupt_reply", s["control_reply"]
    assert s["reply"]["status"] == "error" and s["reply"]["ename"] == "KeyboardInterrupt", s
    assert "woke up" not in s["stdout"]


def test_control_channel(msg):
    s = msg["control_kernel_info"]
    assert s["reply"]["msg_type"] == "kernel_info_reply", s
    assert s["reply"]["content"]["status"] == "ok"


def test_heartbeat(msg):
    assert msg["heartbeat"]["beating"] is True


def test_large_messages_both_ways(msg):
    s = msg["large_messages"]
    assert s["to_kernel"]["reply"]["status"] == "ok", s["to_kernel"]["reply"]
    assert s["to_kernel"]["stdout"] == "4000000\n"
    assert s["from_kernel_len"] == 4_000_001 and s["from_kernel_only_y"], s
    assert s["after"]["reply"]["status"] == "ok"


def test_restart_gives_fresh_kernel(msg):
    s = msg["restart"]
    assert s["set"]["reply"]["status"] == "ok"
    assert s["new_pid"] != s["old_pid"]
    assert not s["old_alive"], "old launcher still running after restart"
    assert s["old_returncode"] == 0, f"old launcher did not exit cleanly on shutdown_request: {s}"
    assert s["lookup"]["reply"]["status"] == "error" and s["lookup"]["reply"]["ename"] == "NameError", s
    assert s["fresh"]["stdout"] == "after restart\n", s["fresh"]
    assert len(s["kernels"]) == 1, f"expected exactly the new kernel: {s['kernels']}"


def test_forced_restart(msg):
    s = msg["restart_now"]
    assert not s["old_alive"], s
    assert s["after"]["reply"]["status"] == "ok", s
    assert s["after"]["stdout"] == "after forced restart\n"
    assert len(s["kernels"]) == 1, f"expected exactly the new kernel: {s['kernels']}"


def test_shutdown(msg):
    s = msg["shutdown"]
    assert not s["launcher_alive"], s
    assert s["returncode"] == 0, f"launcher status after shutdown_request: {s}"
    assert "ShutdownRequest" in s["how"], f"needed signals to stop: {s['how']}"
    assert not s["connection_file_exists"]
    assert s["kernels_left"] == []
    assert msg.leftovers == [], f"processes left after the client exited: {msg.leftovers}"


def test_restarter_brings_crashed_kernel_back(khost):
    """AsyncIOLoopKernelManager (as in jupyter_server): kernel dies -> launcher exits
    -> the restarter starts a new one on the same ports."""
    r = khost.scenario(__file__, "autorestart")
    s = r["crash"]
    assert s["old_returncode"] == 1, s
    assert s["new_pid"] != s["old_pid"]
    assert s["reply"]["status"] == "ok", s
    texts = "".join(o.get("text", "") for o in s.get("outputs", []))
    assert "back False" in texts, s.get("outputs")
    assert r.leftovers == []


# =========================================================== tests: isolation


@pytest.fixture
def tcp_listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv
    srv.close()


@pytest.fixture
def abstract_listener():
    name = f"ik-test-{uuid.uuid4().hex}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind("\0" + name)
    srv.listen(8)
    yield name
    srv.close()


def test_kernel_isolation(khost, tcp_listener, abstract_listener):
    port = tcp_listener.getsockname()[1]
    # sanity: both listeners are reachable from the host
    socket.create_connection(("127.0.0.1", port), timeout=3).close()
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect("\0" + abstract_listener)
    c.close()

    secret = khost.home_secret()
    fake = khost.runtime / f"kernel-{uuid.uuid4()}.json"
    khost.write(fake, json.dumps({"shell_port": 1, "key": "other kernel's key"}), 0o600)
    khost.write(khost.workdir / "input.txt", "from the host\n")
    r = khost.scenario(__file__, "isolation", tcp_port=port, abstract=abstract_listener, secret=str(secret),
                       fake_conn=str(fake), input_name="input.txt", token=khost.token)
    p = r["probe"]

    # network: only lo; host loopback TCP and abstract unix sockets unreachable
    assert p["interfaces"] == ["lo"], p["interfaces"]
    assert not p["tcp"]["ok"], f"host 127.0.0.1:{port} reachable from the kernel: {p['tcp']}"
    assert p["tcp"]["error"] in ("ConnectionRefusedError", "OSError", "TimeoutError"), p["tcp"]
    assert not p["abstract"]["ok"], f"host abstract socket reachable: {p['abstract']}"

    # other kernels' connection files: the runtime dir shows only our own (private, ipc) copy
    assert not p["fake_conn"]["ok"], f"another kernel's connection file is readable: {p['fake_conn']}"
    assert p["runtime_list"] == {"ok": True, "value": [Path(p["connection_file"]).name]}, p["runtime_list"]
    own = p["own_conn"]
    assert own["ok"], own
    assert own["value"]["transport"] == "ipc", own["value"]
    assert own["value"]["key"] == r["host_connection_file"]["content"]["key"]
    assert r["host_connection_file"]["unchanged"], "the kernel rewrote the host's connection file"
    assert r["host_connection_file"]["content"]["transport"] == "tcp"

    # HOME: same path, private, empty of the caller's files, writable; nothing leaks out
    assert p["home"] == str(khost.home)
    assert not p["secret"]["ok"], f"secret in the caller's HOME readable: {p['secret']}"
    assert p["home_list"]["ok"] and secret.name not in p["home_list"]["value"], p["home_list"]
    assert p["home_write"]["ok"], p["home_write"]
    assert not (khost.home / f"inside-home-{khost.token}").exists(), "private HOME write reached the host"
    assert secret.read_text() == f"secret {khost.token}\n"

    # working directory: readable and writable, writes land on the host as the caller
    assert p["cwd"] == str(khost.workdir)
    assert p["input"] == {"ok": True, "value": "from the host\n"}
    assert p["write"]["ok"], p["write"]
    written = khost.workdir / "written-inside.txt"
    assert written.read_text() == f"written {khost.token}"
    assert written.stat().st_uid == khost.uid

    # identity, processes, environment
    assert (p["uid"], p["gid"]) == (khost.uid, khost.gid)
    assert p["signal_host"]["error"] == "ProcessLookupError", p["signal_host"]
    cmdlines = list(p["processes"].values())
    assert len(cmdlines) <= 6, f"too many processes visible: {p['processes']}"
    assert not [c for c in cmdlines if "pytest" in c or "--ik-scenario" in c], p["processes"]
    # the kernel's own command line, pooled as cold (a pooled kernel's reads as exec made it: docs/pool.md)
    assert any(c.startswith(f"{PYTHON} -m ipykernel_launcher -f ") for c in cmdlines), p["processes"]
    assert "IK_SECRET_ENV" not in p["env"], "the caller's environment leaked into the kernel"
    # the host's JPY_PARENT_PID would make ipykernel poll a parent it cannot see
    # (None or "1", which ipykernel takes as "do not poll", are fine)
    assert p["jpy_parent_pid"] in (None, "", "0", "1"), p["jpy_parent_pid"]
    assert not p["shadow"]
    assert r.leftovers == []


def test_other_connection_files_hidden_when_cwd_holds_runtime_dir(khost, tcp_listener, abstract_listener):
    """The common layout of a notebook server started in HOME: the kernel's cwd
    (mounted) contains the Jupyter runtime dir with every kernel's connection
    file (HMAC keys). The kernel must still see only its own private copy."""
    runtime = khost.mkdir(khost.workdir / ".local" / "share" / "jupyter" / "runtime", 0o700)
    for d in (khost.workdir / ".local", khost.workdir / ".local" / "share", runtime.parent):
        khost.chown(d)
    fake = khost.write(runtime / f"kernel-{uuid.uuid4()}.json",
                       json.dumps({"shell_port": 1, "key": "other kernel's key"}), 0o600)
    khost.write(khost.workdir / "input.txt", "from the host\n")
    r = khost.scenario(__file__, "isolation", env={"JUPYTER_RUNTIME_DIR": runtime},
                       tcp_port=tcp_listener.getsockname()[1], abstract=abstract_listener,
                       secret=str(khost.home / "none"), fake_conn=str(fake), input_name="input.txt",
                       token=khost.token)
    p = r["probe"]
    assert Path(p["connection_file"]).parent == runtime
    assert p["own_conn"]["ok"] and p["own_conn"]["value"]["transport"] == "ipc", p["own_conn"]
    assert not p["fake_conn"]["ok"], f"another kernel's connection file is readable: {p['fake_conn']}"
    assert p["runtime_list"] == {"ok": True, "value": [Path(p["connection_file"]).name]}, p["runtime_list"]
    assert p["input"] == {"ok": True, "value": "from the host\n"}  # the rest of cwd is there
    assert r.leftovers == []


# =========================================================== tests: lifecycle


def test_start_stop_cycles_leave_nothing(khost):
    """Ten start/stop cycles: no processes, fds, files or mounts left behind."""
    mounts_before = mount_table()
    tmp_before = _tmp_entries(khost.uid) if khost.mode == "user" else set()
    r = khost.scenario(__file__, "cycles", n=10)
    mounts_after = mount_table()
    rows = r.data.get("cycles", [])
    errors = [row for row in rows if "error" in row]
    assert not errors, f"cycles failed:\n{errors[0]['error']}\n{r.context()}"
    assert len(rows) == 10, r.context()
    # Every shutdown ends by shutdown_request alone, promptly. The hang this
    # catches: ipykernel 6.17's control thread waiting 10 s for a flush by an
    # IOPub thread its main thread has already stopped (more frequent with
    # the sandbox's tmpfs HOME); the launcher now ends such a kernel
    # (apply/shutdown_watch.hpp). 8 s is far above a loaded machine's
    # slowest clean shutdown (about 2 s) and below the 10 s of the hang.
    hangs = [{k: v for k, v in row.items() if k != "result"} for row in rows
             if row["returncode"] != 0 or row["how"] != "_ShutdownStatus.ShutdownRequest"
             or row["shutdown_seconds"] > 8]
    assert not hangs, f"{len(hangs)} of {len(rows)} shutdowns hung or needed a signal: {hangs}\n{r.context()}"
    for row in rows:
        res = [o for o in row["result"] if o["msg_type"] == "execute_result"]
        assert res and res[0]["content"]["data"]["text/plain"] == str(row["i"] + 1), row
        assert not row["launcher_alive"], row
        assert not row["connection_file_exists"], row
    assert r.leftovers == [], f"processes left: {r.leftovers}"
    # fds of the client: measured after the first cycle (lazy allocations) vs the last
    growth = rows[-1]["fds"] - rows[0]["fds"]
    assert growth <= 2, (f"client fds grew by {growth} over 9 cycles: {[row['fds'] for row in rows]}\n"
                         + "\n".join(r.data["fd_targets"]))
    assert r.data["runtime_left"] == [], "files left in the Jupyter runtime dir"
    assert sorted(os.listdir(khost.workdir)) == [], "files left in the kernel's working directory"
    new_mounts = mounts_after - mounts_before
    assert not new_mounts, f"new host mounts: {new_mounts}"
    if khost.mode == "user":
        assert _tmp_entries(khost.uid) == tmp_before, "new files of the caller in the host's /tmp"


def _tmp_entries(uid: int) -> set[str]:
    out = set()
    for e in os.listdir("/tmp"):
        try:
            if os.lstat(f"/tmp/{e}").st_uid == uid:
                out.add(e)
        except OSError:
            pass
    return out


WATCH_NOTE = "answered shutdown_request but then used no CPU"


def test_kernel_idle_after_shutdown_reply_is_ended(khost):
    """A kernel that replied to shutdown_request and then sleeps instead of
    exiting (what ipykernel's shutdown deadlock looks like from outside, made
    certain here by an atexit handler) is ended by the launcher within about
    half a second, not by jupyter_client's SIGTERM; status 0."""
    r = khost.scenario(__file__, "exit_after_shutdown",
                       code="import atexit, time\natexit.register(time.sleep, 60)")
    s = r["shutdown"]
    assert s["how"] == "_ShutdownStatus.ShutdownRequest", (s, r.context())
    assert s["returncode"] == 0, (s, r.context())
    assert s["seconds"] < 8, (s, r.context())  # 60 s (or jupyter_client's SIGTERM at 10 s) without the watch
    assert WATCH_NOTE in r.run.stderr, r.context()
    assert r.leftovers == []


def test_kernel_busy_after_shutdown_reply_is_not_ended(khost):
    """The watch ends only an idle kernel: an atexit handler that computes for
    longer than the idle limit runs to its end (it writes a file last)."""
    r = khost.scenario(__file__, "exit_after_shutdown",
                       code="import atexit, time\n"
                            "def ik_busy():\n"
                            "    t = time.process_time()\n"
                            "    while time.process_time() - t < 0.8:\n"
                            "        pass\n"
                            "    open('atexit-done', 'w').write('done')\n"
                            "atexit.register(ik_busy)")
    s = r["shutdown"]
    assert s["returncode"] == 0 and s["how"] == "_ShutdownStatus.ShutdownRequest", (s, r.context())
    assert (khost.workdir / "atexit-done").read_text() == "done", r.context()
    assert WATCH_NOTE not in r.run.stderr, r.context()
    assert r.leftovers == []


ABORT_NOTE = "in its own teardown, after it had answered shutdown_request"


ABORT_UNSENT_NOTE = "in its own teardown, after a client's shutdown_request and before its shutdown_reply got out"


def test_kernel_abort_after_shutdown_reply_counts_as_the_shutdown(khost):
    """ipykernel 6's IOPub/control thread race can abort a kernel (SIGABRT,
    libzmq's assertion) after its shutdown_reply, in its own teardown
    (bench/soak.md). The shutdown was complete, so the launcher exits 0 and
    says on stderr what happened; made certain here by an atexit handler
    that aborts once the client has the reply (an abort at once could beat
    libzmq's I/O thread to sending it: the next test)."""
    reply_file = khost.workdir / "reply-seen"
    code = ("import atexit, os, time\n"
            "def ik_abort_after_reply():\n"
            "    t = time.monotonic()\n"
            "    while not os.path.exists('reply-seen') and time.monotonic() - t < 20:\n"
            "        time.sleep(0.01)\n"
            "    os.abort()\n"
            "atexit.register(ik_abort_after_reply)")
    r = khost.scenario(__file__, "shutdown_then_end", code=code, reply_file=str(reply_file))
    s = r["shutdown"]
    assert s["reply"] == "shutdown_reply", (s, r.context())
    assert s["returncode"] == 0, (s, r.context())
    assert s["seconds"] < 15, (s, r.context())  # not the handler's 20 s: it saw the file
    assert "died of SIGABRT " + ABORT_NOTE in r.run.stderr, r.context()
    assert WATCH_NOTE not in r.run.stderr, r.context()
    assert r.leftovers == []


def test_kernel_abort_before_its_shutdown_reply_got_out_counts_as_the_shutdown(khost):
    """The same race lost earlier: the kernel aborts with its shutdown_reply
    still in libzmq's queue (seen under load with an abort in an atexit
    handler), so no reply reaches the relay. After a client's
    shutdown_request that still counts as the shutdown; made certain here
    by aborting in place of sending the reply."""
    code = ("import os\n"
            "k = get_ipython().kernel\n"
            "ik_send = k.session.send\n"
            "def ik_abort_at_reply(stream, msg_or_type, *a, **kw):\n"
            "    if msg_or_type == 'shutdown_reply':\n"
            "        os.abort()\n"
            "    return ik_send(stream, msg_or_type, *a, **kw)\n"
            "k.session.send = ik_abort_at_reply")
    r = khost.scenario(__file__, "shutdown_then_end", code=code, reply_file="")
    s = r["shutdown"]
    assert s["returncode"] == 0, (s, r.context())
    assert "died of SIGABRT " + ABORT_UNSENT_NOTE in r.run.stderr, r.context()
    assert ABORT_NOTE not in r.run.stderr, r.context()
    assert WATCH_NOTE not in r.run.stderr, r.context()
    assert r.leftovers == []


@pytest.mark.parametrize("code,expected", [
    ("import os; os._exit(3)", {3}),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", {128 + 9, -9}),
    # no shutdown_reply before it: an abort is the kernel's status, not a shutdown
    ("import os; os.abort()", {128 + 6}),
], ids=["exit3", "sigkill", "sigabrt"])
def test_kernel_exit_status_becomes_launcher_status(khost, code, expected):
    r = khost.scenario(__file__, "exit_status", code=code)
    s = r["exit"]
    assert s["returncode"] in expected, f"launcher status {s['returncode']}, expected {expected}"
    assert s["seconds"] < 10, f"launcher took {s['seconds']:.1f}s to follow the kernel"
    assert s["kernels_left"] == []
    assert r.leftovers == []


@pytest.mark.parametrize("signame", ["SIGKILL", "SIGTERM"])
def test_killed_launcher_takes_the_sandbox_with_it(khost, signame):
    base = 100_000_000 + int(uuid.uuid4().int % 800_000) * 100
    tokens = [str(base + i) for i in range(4)]
    r = khost.scenario(__file__, "kill_launcher", signame=signame, tokens=tokens)
    s = r["kill"]
    assert s["spawn"]["reply"]["status"] == "ok", s["spawn"]
    assert len(s["before"]) >= 4, f"the kernel's children were not visible before the kill: {s['before']}"
    assert s["left_at_2s"] == [], (f"still running 2 s after {signame} of the launcher: {s['left_at_2s']}; "
                                   f"all gone after {s['gone_after']}s; at 12 s: {s['left_at_12s']}")
    assert r.leftovers == []


# ------------------------------------------------- the launcher run directly


def _conn(**over):
    c = {"shell_port": 0, "iopub_port": 0, "stdin_port": 0, "control_port": 0, "hb_port": 0,
         "ip": "127.0.0.1", "key": uuid.uuid4().hex, "transport": "tcp",
         "signature_scheme": "hmac-sha256", "kernel_name": ""}
    socks = []
    for k in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        c[k] = s.getsockname()[1]
    for s in socks:
        s.close()
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def _launch(khost, conn_path: Path, *cmd: str, timeout=30):
    return khost.run([khost.launcher, "-f", conn_path, "--", *cmd], timeout=timeout)


@pytest.mark.cold_only("runs the launcher directly, no kernelspec: nothing to pool")
@pytest.mark.parametrize("status", [0, 3, 77])
def test_direct_launch_exit_status(khost, status):
    f = khost.write(khost.base / "conn.json", json.dumps(_conn()), 0o600)
    r = _launch(khost, f, "/bin/sh", "-c", f"exit {status}")
    assert r.returncode == status, r
    assert khost.leftovers(grace=2) == []


@pytest.mark.cold_only("runs the launcher directly, no kernelspec: nothing to pool")
def test_direct_launch_killed_kernel_status(khost):
    f = khost.write(khost.base / "conn.json", json.dumps(_conn()), 0o600)
    r = _launch(khost, f, "/bin/sh", "-c", "kill -KILL $$")
    assert r.returncode in (128 + 9, -9), r
    assert khost.leftovers(grace=2) == []


BAD_FILES = {
    "missing": (None, None),
    "empty": ("", None),
    "bad-json": ('{"shell_port": 1,', "JSON"),
    "not-an-object": ("[1, 2, 3]", None),
    "missing-port": (lambda: json.dumps(_conn(shell_port=None)), "shell_port"),
    "port-out-of-range": (lambda: json.dumps(_conn(hb_port=70000)), "hb_port"),
    "unknown-transport": (lambda: json.dumps(_conn(transport="udp")), "udp"),
}


@pytest.mark.cold_only("runs the launcher directly, no kernelspec: nothing to pool")
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_connection_file(khost, case):
    content, word = BAD_FILES[case]
    f = khost.base / "conn.json"
    if content is not None:
        khost.write(f, content() if callable(content) else content, 0o600)
    started = khost.workdir / "kernel-started"
    r = _launch(khost, f, "/bin/sh", "-c", "touch kernel-started; exec sleep 60")
    assert r.returncode != 0, r
    assert r.elapsed < 10, r
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one clear error line:\n{r}"
    assert str(f) in lines[0], f"the error should name the file:\n{r}"
    if word:
        assert word in lines[0], f"the error should mention {word!r}:\n{r}"
    assert r.stdout == ""
    assert not started.exists(), "the kernel was started with a bad connection file"
    assert khost.leftovers(grace=2) == []


@pytest.mark.cold_only("runs the launcher directly, no kernelspec: nothing to pool")
def test_host_port_in_use(khost, tcp_listener):
    """A port of the connection file is taken: clear error, nothing left running."""
    port = tcp_listener.getsockname()[1]
    f = khost.write(khost.base / "conn.json", json.dumps(_conn(iopub_port=port)), 0o600)
    r = _launch(khost, f, "/bin/sh", "-c", "exec sleep 60")
    assert r.returncode != 0, r
    assert r.elapsed < 15, r
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one clear error line:\n{r}"
    assert str(port) in lines[0], f"the error should name the port:\n{r}"
    assert khost.leftovers(grace=2) == []


if __name__ == "__main__":
    scenario_main()
