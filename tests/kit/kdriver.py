"""Kernel client driver for the security suite.

Runs as the caller (root, or the unprivileged test user through setpriv),
starts ONE isolated kernel through jupyter_client (KernelManager with a
kernelspec from JUPYTER_PATH, exactly as a Jupyter server would), and then
serves requests from the test process: one JSON object per stdin line, one
JSON answer per stdout line prefixed with PREFIX (anything else on stdout is
noise and ignored by the reader).

Requests:
  {"op": "start", "kernel": NAME, "cwd": DIR, "log": FILE, "pty": bool}
  {"op": "exec", "code": CODE, "timeout": SECONDS}
  {"op": "alive"}
  {"op": "wait_dead", "timeout": SECONDS}
  {"op": "pty_pending"}
  {"op": "stop"}
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import sys
import termios
import time
import traceback
import tty

PREFIX = "@@IKSEC@@ "


class Driver:
    def __init__(self):
        self.km = None
        self.kc = None
        self.pty_master = None
        self.pty_slave = None
        self.logf = None

    # ------------------------------------------------------------------ ops
    def op_start(self, kernel, cwd, log, pty=False, timeout=60):
        from jupyter_client.manager import KernelManager
        runtime = os.environ["JUPYTER_RUNTIME_DIR"]
        import uuid
        cf = os.path.join(runtime, f"kernel-{uuid.uuid4()}.json")
        self.logf = open(log, "ab", buffering=0)
        kw = {"stdout": self.logf, "stderr": self.logf, "cwd": cwd}
        if pty:
            self.pty_master, self.pty_slave = os.openpty()
            tty.setraw(self.pty_slave)
            kw["stdin"] = self.pty_slave
        t0 = time.monotonic()
        self.km = KernelManager(kernel_name=kernel, connection_file=cf, shutdown_wait_time=5)
        self.km.start_kernel(**kw)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=timeout)
        return {"launcher_pid": self.km.provisioner.process.pid, "connection_file": cf,
                "start_seconds": time.monotonic() - t0}

    def op_exec(self, code, timeout=30):
        kc, km = self.kc, self.km
        msg_id = kc.execute(code, allow_stdin=False, store_history=False)
        out = {"stdout": "", "stderr": "", "reply": None, "idle": False, "errors": []}
        deadline = time.monotonic() + timeout
        last_alive_check = 0.0
        while not (out["reply"] is not None and out["idle"]):
            now = time.monotonic()
            if now > deadline:
                out["timeout"] = True
                break
            if now - last_alive_check > 0.5:
                last_alive_check = now
                if not km.is_alive():
                    out["died"] = True
                    break
            try:
                m = kc.get_shell_msg(timeout=0.01)
                if m["parent_header"].get("msg_id") == msg_id:
                    out["reply"] = m["content"]
            except queue.Empty:
                pass
            try:
                m = kc.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                continue
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            t, c = m["msg_type"], m["content"]
            if t == "status" and c.get("execution_state") == "idle":
                out["idle"] = True
            elif t == "stream":
                out[c["name"]] = out.get(c["name"], "") + c["text"]
            elif t == "error":
                out["errors"].append({"ename": c["ename"], "evalue": c["evalue"]})
        out["alive"] = km.is_alive()
        return out

    def op_alive(self):
        p = self.km.provisioner.process if self.km and self.km.provisioner else None
        return {"alive": bool(self.km and self.km.is_alive()),
                "returncode": p.poll() if p is not None else None}

    def op_wait_dead(self, timeout=30):
        p = self.km.provisioner.process
        t0 = time.monotonic()
        try:
            rc = p.wait(timeout=timeout)
        except Exception:
            return {"dead": False, "waited": time.monotonic() - t0}
        return {"dead": True, "returncode": rc, "waited": time.monotonic() - t0}

    def op_pty_pending(self):
        buf = bytearray(4)
        fcntl.ioctl(self.pty_slave, termios.FIONREAD, buf)
        n = int.from_bytes(bytes(buf), sys.byteorder)
        data = b""
        if n:
            os.set_blocking(self.pty_slave, False)
            try:
                data = os.read(self.pty_slave, n)
            except OSError:
                pass
        return {"pending": n, "data": data.decode("latin-1")}

    def op_stop(self):
        try:
            if self.kc:
                self.kc.stop_channels()
            if self.km:
                self.km.shutdown_kernel(now=not self.km.is_alive())
        finally:
            self.km = self.kc = None
        return {}


def main():
    d = Driver()
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        op = req.pop("op")
        try:
            res = getattr(d, "op_" + op)(**req)
            res["ok"] = True
        except Exception:
            res = {"ok": False, "error": traceback.format_exc()}
        out.write(PREFIX + json.dumps(res) + "\n")
        out.flush()
        if op == "stop":
            break
    out.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
