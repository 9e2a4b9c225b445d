"""The isolated kernel through @jupyterlab/services (JupyterLab's client
library) in Node, against Debian's jupyter_server with token auth, as root
and as the unprivileged test user (server and client run as that user).

The Node side is tests/browser/jupyterlab/services-client.test.js (node's
built-in test runner): list kernelspecs, start a session with the isolated
kernelspec, execute, stdin, interrupt, network/HOME cut off, restart,
shutdown. This side checks that nothing is left: launcher and kernel
processes, connection files, mounts in the server's namespace, files in
the server's TMPDIR.

KERNELSPECS lists the kernelspecs to run it against: the cold one now; the
warm pool's kernelspec joins it when the pool exists.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from kit.browser import DISPLAY, NAME, Server, app_for, install_kernelspec, jupyter_for, launchers, missing_server
from kit.common import PYTHON, SAFE_PATH, processes_matching, wait_for

NODE = "/usr/bin/node" if os.access("/usr/bin/node", os.X_OK) else "node"


def _missing_node() -> str | None:
    r = subprocess.run(["sh", "-c", f"command -v {NODE}"], capture_output=True)
    return None if r.returncode == 0 else "node not installed (scripts/install-deps installs nodejs)"


pytestmark = pytest.mark.skipif(bool(missing_server() or _missing_node()),
                                reason=missing_server() or _missing_node() or "")

# (id, kernelspec name, display name). Add the pooled kernelspec here once the warm pool exists.
KERNELSPECS = [("cold", NAME, DISPLAY)]


@pytest.mark.parametrize("spec", KERNELSPECS, ids=[k[0] for k in KERNELSPECS])
@pytest.mark.parametrize("mode", ["root", "user"])
def test_services_client(mode, spec, tools, lab_app):
    _, kernel, display = spec
    j = jupyter_for(mode, tools, f"services-{spec[0]}")
    app = app_for(j, tools, lab_app, with_node_modules=True)
    jupyter_path = install_kernelspec(j)
    nbdir = j.mkdir(j.base / "notebooks")
    server = Server(j, [PYTHON, "-m", "jupyter_server"], nbdir, jupyter_path)
    try:
        server.wait_ready()
        mounts_before = server.mountinfo()
        runtime_before = set(os.listdir(j.runtime_dir))
        env = {"IK_SERVER_URL": server.base, "IK_TOKEN": server.token, "IK_KERNEL": kernel,
               "IK_DISPLAY": display, "PATH": SAFE_PATH, "NODE_PATH": str(app / "node_modules")}
        r = j.run([NODE, "--test", "--test-reporter=spec", str(app / "services-client.test.js")],
                  cwd=app, env=env, timeout=300)
        steps = dict(re.findall(r"ik-step (\w+) ([0-9.]+)", r.stdout))
        print(f"[{mode}/{spec[0]}] node ran {r.elapsed:.1f} s; seconds per step: {steps}")
        assert r.returncode == 0, f"{r}\n--- server log\n{server.text_log()}"
        assert set(steps) >= {"start", "execute", "interrupt", "restart", "shutdown"}, r.stdout
        # Nothing left once the session is shut down, while the server still runs.
        wait_for(lambda: not launchers(tools, j), 10, f"no launcher left: {launchers(tools, j)}")
        left = [p for p in processes_matching([str(j.runtime_dir)]) if "ipykernel" in p[1]]
        assert not left, f"kernel processes left: {left}"
        assert not [f for f in os.listdir(j.runtime_dir) if f.startswith("kernel-")] and \
            set(os.listdir(j.runtime_dir)) <= runtime_before | {"jupyter_cookie_secret"}, os.listdir(j.runtime_dir)
        assert server.mountinfo() - mounts_before == set(), "mounts left in the server's mount namespace"
    finally:
        rc = server.stop()
        j.close()
    assert rc is not None
    assert os.listdir(server.tmpdir) == [], "files left in the server's TMPDIR"
