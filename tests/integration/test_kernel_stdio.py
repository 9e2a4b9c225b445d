"""The kernel's stdout/stderr are pipes that the launcher copies (issue 10,
item 3): a kernel must not reach what the launcher's own stdout/stderr point
at (the Jupyter server's log file, a pipe, the grader's terminal).

Each scenario starts a real kernel with jupyter_client, the launcher's
stdout/stderr sent to a file, a pipe or a pty the client made, and has the
kernel try every descriptor it (its subprocess, its init) can see: reopen
for reading and writing, readlink, match against the client's destination.
Escape sequences written by the kernel must not reach a terminal; a flood
must not grow the launcher's memory nor stall the relay. As root and as the
test user. This file is also the client script (see tests/kit/kernel.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kit.kernel import (KERNEL, START_TIMEOUT, eval_json, new_connection_file, run_cell, scenario, scenario_main,
                        step, stop_kernel)
from kit.stdio import Drain, FD_PROBE, reached


# =========================================================== client side


def open_destination(kind: str, private: Path, secret: str):
    """(fd for the launcher's stdout/stderr, description of it for the probe, reader)"""
    if kind == "file":
        log = private / "server.log"
        log.write_text(secret)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        st = os.fstat(fd)
        return fd, {"dev": st.st_dev, "ino": st.st_ino}, lambda: log.read_bytes()
    d = Drain(kind)
    return d.fd, d.target, d.data


def start_kernel_with(stdio_fd: int, kernel_name: str = KERNEL, stdout_fd: int | None = None):
    from jupyter_client.manager import KernelManager
    km = KernelManager(kernel_name=kernel_name, connection_file=new_connection_file(), shutdown_wait_time=20)
    km.start_kernel(cwd=os.getcwd(), stdout=stdout_fd if stdout_fd is not None else stdio_fd, stderr=stdio_fd)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=START_TIMEOUT)
    return km, kc


@scenario
def reopen_attack(out, kind):
    token = os.environ["IK_TEST_TOKEN"]
    private = Path(os.environ["TMPDIR"])
    secret = f"SERVER-LOG-SECRET-{token}\n"
    fd, target, captured = open_destination(kind, private, secret)
    out["target"] = target
    km, kc = start_kernel_with(fd)
    try:
        with step(out, "probe") as s:
            # The kernel-side probe (kit/stdio.py), which on a match also tries the attack.
            s["result"] = eval_json(kc, FD_PROBE % json.dumps({**target, "attack": True}), timeout=60)
        with step(out, "inject") as s:
            # Escape sequences on the kernel's real stderr (ipykernel copies
            # fd-level output to it) and straight to its original fd.
            code = (f"import os, sys, time\n"
                    f"os.write(2, b'before-{token}\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\x1b[0m\\r\\x08\\x07 after-{token}\\n')\n"
                    f"os.write(sys.stderr._original_stdstream_copy, b'direct-{token}\\x1bP+q544e\\x1b\\\\ end\\n')\n"
                    "time.sleep(1)")
            s["reply"] = run_cell(kc, code)["reply"]
    finally:
        stop_kernel(km, kc)
    time.sleep(0.5)
    os.close(fd)
    time.sleep(0.3)
    out["captured"] = captured().decode(errors="replace")


def _scenario(khost, name, **args):
    r = khost.scenario(__file__, name, **args)
    assert "_error" not in r.data, r.context()
    assert not r.leftovers, f"processes left behind: {r.leftovers}"
    return r


@pytest.mark.parametrize("kind", ["file", "pipe", "pty"])
def test_kernel_cannot_reopen_the_launchers_stdio(khost, kind):
    r = _scenario(khost, "reopen_attack", kind=kind)
    res = r["probe"]["result"]
    token = khost.token
    assert reached(res) == [], f"the kernel reached the client's {kind}: {reached(res)}"
    captured = r.data["captured"]
    assert "INJECTED" not in captured
    if kind == "file":
        assert captured.startswith(f"SERVER-LOG-SECRET-{token}\n"), "the log was truncated or rewritten"
    dump = json.dumps(res)
    assert f"SERVER-LOG-SECRET-{token}" not in dump
    # The kernel, its subprocess and `ls` in a shell hold only pipes, /dev/null
    # and their own files: no terminal, no file of the host's log.
    for who in ("self", "child"):
        links = {fd: i.get("link", "") for fd, i in res[who]["fds"].items()}
        assert links["0"] == "/dev/null", links
        assert re.fullmatch(r"pipe:\[\d+\]", links["1"]) and re.fullmatch(r"pipe:\[\d+\]", links["2"]), links
        assert not any(l.startswith("/dev/pts") or l.startswith("/dev/tty") for l in links.values()), links
    assert "/dev/pts" not in res["sh_ls"] and "server.log" not in res["sh_ls"], res["sh_ls"]
    # The init's descriptors stay closed to the kernel, and it holds only 0-2.
    # (The test user cannot even list them; as root inside it can list, not open.)
    if res["init"].get("error") is not None:
        assert res["init"]["error"] == 13, res["init"]  # EACCES
    else:
        init = res["init"]["fds"]
        assert sorted(init, key=int) == ["0", "1", "2"], init
        assert all("link" not in i and i["read"] != "ok" and i["write"] != "ok" for i in init.values()), init


@pytest.mark.parametrize("kind", ["file", "pipe", "pty"])
def test_kernel_stderr_reaches_the_launchers_stderr(khost, kind):
    """Text arrives; control sequences are removed on a terminal only."""
    r = _scenario(khost, "reopen_attack", kind=kind)
    assert r["inject"]["reply"]["status"] == "ok", r["inject"]
    captured, token = r.data["captured"], khost.token
    assert f"before-{token}" in captured and f"after-{token}" in captured, captured[-3000:]
    assert f"direct-{token}" in captured and " end\n" in captured, captured[-3000:]
    if kind == "pty":
        line = next(l for l in captured.split("\n") if f"before-{token}" in l)
        assert line == f"before-{token}red after-{token}", repr(line)
        assert f"direct-{token} end" in captured
        for bad in ("\x1b", "\x07", "\x08", "pwned"):
            assert bad not in captured, f"{bad!r} reached the terminal: {captured[-2000:]!r}"
    else:
        # Not a terminal: the bytes pass unchanged, as they would from a plain kernel.
        assert f"before-{token}\x1b]0;pwned\x07\x1b[2J" in captured, repr(captured[-2000:])


# --------------------------------------------------------------- flood


def _vm(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v.split()[0]) for k, v in (l.split(":", 1) for l in f) if k in ("VmRSS", "VmHWM")}


FLOOD = r'''
import os, sys, threading
ik_flood = {"bytes": 0, "done": False}
def ik_run(total, fd=sys.stdout._original_stdstream_copy, chunk=b"F" * (1 << 20)):
    while ik_flood["bytes"] < total:
        ik_flood["bytes"] += os.write(fd, chunk)
    ik_flood["done"] = True
threading.Thread(target=ik_run, args=(%d,), daemon=True).start()
'''


def _verbose_kernelspec(private: Path) -> str:
    """A kernelspec like the test one plus -v (so the launcher reports its counters)."""
    d = private / "kspec" / "kernels" / "ik-stdio-v"
    d.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [os.environ["IK_LAUNCHER"], "-v", "--", sys.executable, "-m", "ipykernel_launcher",
                     "-f", "{connection_file}"],
            "display_name": "stdio -v", "language": "python", "metadata": {}}
    (d / "kernel.json").write_text(json.dumps(spec))
    os.environ["JUPYTER_PATH"] = f"{private / 'kspec'}:{os.environ['JUPYTER_PATH']}"
    return "ik-stdio-v"


def _start_verbose_kernel_on_a_pipe():
    """A -v kernel whose stdout is a pipe the caller reads (or not) and whose stderr, with the
    launcher's counters, goes to a log file. Returns (km, kc, read end, log path)."""
    private = Path(os.environ["TMPDIR"])
    log = private / "launcher.log"
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    r, w = os.pipe()
    km, kc = start_kernel_with(log_fd, kernel_name=_verbose_kernelspec(private), stdout_fd=w)
    os.close(w)
    return km, kc, r, log


@scenario
def flood(out, total, stall_seconds):
    """The kernel floods its stdout into a pipe nobody reads for a while
    (back-pressure), then into a reader; the launcher's -v log goes to a file."""
    km, kc, r, log = _start_verbose_kernel_on_a_pipe()
    launcher = km.provisioner.process.pid
    got = [0]
    try:
        out["vm_start"] = _vm(launcher)
        run_cell(kc, FLOOD % total)
        time.sleep(stall_seconds)  # nobody reads: the kernel's writer must be held back
        with step(out, "stalled") as s:
            t = time.monotonic()
            s["cell"] = run_cell(kc, "print(ik_flood['bytes'], ik_flood['done'])", timeout=20)
            s["seconds"] = time.monotonic() - t
            s["hb"] = kc.is_alive()
            s["vm"] = _vm(launcher)

        def reader():
            while True:
                b = os.read(r, 1 << 20)
                if not b:
                    return
                got[0] += len(b)
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        with step(out, "flowing") as s:
            t = time.monotonic()
            while time.monotonic() - t < 180:
                c = run_cell(kc, "print(ik_flood['bytes'], ik_flood['done'])", timeout=20)
                s["cell"] = c
                if c["stdout"].split()[1:] == ["True"]:
                    break
                time.sleep(0.5)
            s["seconds"] = time.monotonic() - t
            s["vm"] = _vm(launcher)
    finally:
        stop_kernel(km, kc)
    th.join(30)
    out["received"] = got[0]
    out["log"] = log.read_text()[-6000:]


@pytest.mark.cold_only("reads the launcher's -v counters of its own kernelspec; a pooled kernel's stdio is pumped by the pool helper")
def test_flood_keeps_launcher_memory_bounded_and_relay_responsive(khost):
    total = 1 << 30  # 1 GiB
    r = _scenario(khost, "flood", total=total, stall_seconds=3, timeout=400)
    stalled, flowing = r["stalled"], r["flowing"]
    written, done = stalled["cell"]["stdout"].split()
    # Back-pressure: while nobody read, the kernel got at most what the pipes
    # and the launcher's buffer hold (a few hundred KiB), not the gigabyte.
    assert done == "False" and int(written) < 8 << 20, stalled["cell"]
    assert stalled["cell"]["reply"]["status"] == "ok" and stalled["hb"], stalled
    assert stalled["seconds"] < 10, stalled
    assert flowing["cell"]["stdout"].split() == [str(total), "True"], flowing
    assert r.data["received"] >= total, r.data["received"]
    # The launcher's peak memory stays where it started, give or take its
    # fixed buffers: nothing of the gigabyte piled up in it.
    hwm0 = r.data["vm_start"]["VmHWM"]
    assert flowing["vm"]["VmHWM"] - hwm0 < 16 * 1024, (r.data["vm_start"], stalled["vm"], flowing["vm"])
    # -v reports the copy, with the stalls the reader caused.
    m = re.search(r"stdout: (\d+) bytes read, (\d+) written, (\d+) dropped, \d+ control bytes removed, (\d+) stalls",
                  r.data["log"])
    assert m, r.data["log"]
    read, wrote, dropped, stalls = map(int, m.groups())
    assert read >= total and wrote == read and dropped == 0 and stalls >= 1, m.group(0)


@scenario
def blocked_shutdown(out):
    """The kernel's stderr goes to a pipe nobody ever reads; a thread floods it
    until the kernel blocks. A plain shutdown must still end everything."""
    km, kc, r, log = _start_verbose_kernel_on_a_pipe()
    launcher = km.provisioner.process
    run_cell(kc, FLOOD % (1 << 30))
    time.sleep(2)
    with step(out, "before") as s:
        s["cell"] = run_cell(kc, "print(ik_flood['bytes'], ik_flood['done'])", timeout=20)
    t = time.monotonic()
    with step(out, "shutdown") as s:
        kc.stop_channels()
        km.shutdown_kernel()
        s["seconds"] = time.monotonic() - t
        s["returncode"] = launcher.poll()
    os.close(r)
    out["log"] = log.read_text()[-6000:]


@pytest.mark.cold_only("reads the launcher's -v counters of its own kernelspec; a pooled kernel's stdio is pumped by the pool helper")
def test_kernel_blocked_on_a_full_stdout_still_shuts_down(khost):
    r = _scenario(khost, "blocked_shutdown")
    written, done = r["before"]["cell"]["stdout"].split()
    assert done == "False" and int(written) < 8 << 20, r["before"]  # it is blocked
    s = r["shutdown"]
    # shutdown_request, the kernel exits; the launcher gives the rest at most
    # 2 s, drops it, and exits with the kernel's status (no SIGTERM needed).
    assert s["returncode"] == 0 and s["seconds"] < 10, s
    assert "rest dropped" in r.data["log"], r.data["log"][-2000:]
    m = re.search(r"stdout: \d+ bytes read, \d+ written, (\d+) dropped", r.data["log"])
    assert m and int(m.group(1)) > 0, r.data["log"][-2000:]


if __name__ == "__main__":
    scenario_main()
