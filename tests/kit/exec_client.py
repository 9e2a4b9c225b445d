"""A small Jupyter client, run by the `isolated-kernel` kit (kit/cli.py) as root or
as the test user, in that user's Jupyter world:

    /usr/bin/python3 exec_client.py exec KERNEL_NAME CWD CODE

prints one JSON document: the kernel_info and what CODE printed. It imports
only jupyter_client, so it runs from any copy readable by the test user.
"""

from __future__ import annotations

import json
import os
import sys


def _client_exec(kernel: str, cwd: str, code: str) -> dict:
    from jupyter_client.manager import KernelManager
    out: dict = {"kernel": kernel}
    km = KernelManager(kernel_name=kernel)
    km.start_kernel(cwd=cwd)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out["kernel_info"] = kc.kernel_info(reply=True, timeout=30)["content"]
        stdout, stderr, errors = [], [], []

        def hook(msg):
            t, c = msg["msg_type"], msg["content"]
            if t == "stream":
                (stdout if c["name"] == "stdout" else stderr).append(c["text"])
            elif t == "error":
                errors.append({"ename": c["ename"], "evalue": c["evalue"]})

        reply = kc.execute_interactive(code, timeout=60, output_hook=hook)
        out.update(reply=reply["content"], stdout="".join(stdout), stderr="".join(stderr), errors=errors)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    return out


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "exec":
        try:
            result = _client_exec(*argv[1:])
        except Exception as e:  # reported as data: the test decides
            import traceback
            result = {"exception": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        print(json.dumps(result, default=str))
        sys.stdout.flush()
        os._exit(0)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
