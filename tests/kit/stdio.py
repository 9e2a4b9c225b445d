"""What the stdio tests of `isolate --stdio=pipe` (test_isolate_stdio.py) and of
the launcher (test_kernel_stdio.py) share: the program-side probe that tries
to reopen every descriptor, and the caller-side pipe or terminal a thread
drains. No pytest here: test_kernel_stdio.py's client script imports it too.
"""

from __future__ import annotations

import os
import threading
import tty

# Runs inside the sandbox, with TARGET (the caller's destination) substituted
# for %r as JSON. For the program's own process, a subprocess it starts (as
# `!cmd` in a notebook would) and the sandbox's init: every fd, its link,
# whether it can be reopened for reading / writing, and whether the opened file
# is the caller's destination (same device and inode, or same terminal). On a
# match it reads the content, and with TARGET["attack"] also tries the attack
# itself: truncate it, write an escape sequence. Prints one JSON line:
# {"self": {"fds": {N: {...}}}, "child": ..., "init": ..., "sh_ls": ...}.
FD_PROBE = r'''
import os, json, stat, subprocess
TARGET = json.loads(%r)
def same(st):
    if stat.S_ISCHR(st.st_mode) and TARGET.get("rdev"):
        return st.st_rdev == TARGET["rdev"]
    return (st.st_dev, st.st_ino) == (TARGET["dev"], TARGET["ino"])
def probe(pid):
    d = f"/proc/{pid}/fd"
    try:
        names = sorted(os.listdir(d), key=int)
    except OSError as e:
        return {"error": e.errno}
    fds = {}
    for n in names:
        p = f"{d}/{n}"
        r = fds[n] = {}
        try:
            r["link"] = os.readlink(p)
        except OSError as e:
            r["link_errno"] = e.errno
        for mode, flags in (("read", os.O_RDONLY), ("write", os.O_WRONLY | os.O_APPEND)):
            try:
                fd = os.open(p, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError as e:
                r[mode] = e.errno
                continue
            try:
                st = os.fstat(fd)
                r[mode] = "ok"
                if same(st):
                    r["reached"] = mode
                    if mode == "read":
                        try:
                            r["content"] = os.read(fd, 65536).decode(errors="replace")
                        except OSError as e:
                            r["content_errno"] = e.errno
                    elif TARGET.get("attack"):
                        os.write(fd, b"INJECTED\x1b]0;pwned\x07\x1b[2J\n")
                        if stat.S_ISREG(st.st_mode):
                            os.ftruncate(fd, 0)
            except OSError as e:
                r[mode + "_op_errno"] = e.errno
            finally:
                os.close(fd)
    return {"fds": fds}
child = subprocess.Popen(["sleep", "30"])
SH = "ls -l /proc/self/fd/ 2>&1; cat /proc/self/fd/2 </dev/null >/dev/null 2>&1 & sleep 0.2; kill $! 2>/dev/null; true"
sh = subprocess.run(["sh", "-c", SH], capture_output=True, text=True)
res = {"self": probe(os.getpid()), "child": probe(child.pid), "init": probe(1), "sh_ls": sh.stdout}
child.kill()
child.wait()
print(json.dumps(res), flush=True)
'''


def reached(result: dict, who=("self", "child", "init")) -> list:
    """(process, fd, info) of every descriptor FD_PROBE reopened onto the caller's destination."""
    return [(w, fd, info) for w in who for fd, info in result[w].get("fds", {}).items() if info.get("reached")]


class Drain:
    """A pipe or a raw pty (KIND "pipe" or "pty") whose read end a thread drains:
    hand `fd` (the write end) to the program, describe it to FD_PROBE with `target`."""

    def __init__(self, kind: str):
        if kind == "pipe":
            r, w = os.pipe()
        else:
            r, w = os.openpty()
            tty.setraw(w)  # no \n -> \r\n, so the bytes compare exactly
        self.fd = w
        st = os.fstat(w)
        self.target = {"dev": st.st_dev, "ino": st.st_ino, "rdev": st.st_rdev if kind == "pty" else 0}
        self._got = bytearray()
        self._r = r
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while True:
            try:
                b = os.read(self._r, 65536)
            except OSError:  # EIO: the pty's last writer closed
                return
            if not b:
                return
            self._got.extend(b)

    def data(self, join: float = 0.0) -> bytes:
        """What arrived so far; JOIN: wait up to that long for the writers to close first."""
        if join:
            self._thread.join(join)
        return bytes(self._got)
