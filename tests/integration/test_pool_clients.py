"""The pool daemon and its clients (docs/pool.md): a client that connects
and says nothing must not stop the daemon from serving the others. Real
daemon, as root and as the test user (the `ph` fixture of test_pool.py)."""
from __future__ import annotations

import json

from kit.common import PYTHON
import test_pool

# The fixtures of test_pool.py: a daemon of its own per test, as root and as the test user.
ph, pool_session = test_pool.ph, test_pool.pool_session

STALLED_CLIENT = r"""
import os, socket, subprocess, sys, time
ik = os.environ["IK_POOL_BIN"]
subprocess.run([ik, "pool", "start"], check=True, timeout=60)
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(os.path.join(os.environ["XDG_RUNTIME_DIR"], "isolated-kernel", "pool.sock"))
t0 = time.monotonic()  # connected, and silent from here on
try:
    r = subprocess.run([ik, "pool", "status", "--json"], capture_output=True, text=True, timeout=60)
    out = {"rc": r.returncode, "pid": json.loads(r.stdout).get("pid") if r.returncode == 0 else None,
           "err": r.stderr}
except subprocess.TimeoutExpired:
    out = {"rc": "hung"}
out["seconds"] = round(time.monotonic() - t0, 1)
s.close()
print(json.dumps(out))
""".replace("import os,", "import json, os,")


def test_silent_client_does_not_block_the_daemon(ph):
    """Used to hang: the daemon read each request blocking, so one silent
    connection stopped every status, stop and claim (claims then fell back
    to cold starts after their timeout, for as long as it stayed open)."""
    r = ph.h.run([PYTHON, "-c", STALLED_CLIENT], env=ph.env(), timeout=120)
    assert r.returncode == 0, r
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0 and out["pid"], out
    log = (ph.xdg / "isolated-kernel" / "pool.log").read_text()
    assert "a client connected but sent no request within 2000 ms: dropped" in log, log
