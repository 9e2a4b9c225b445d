"""What the run ran on: machine, versions, the programs measured."""
from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess

import zmq

from .common import REPO
from .procfs import meminfo


def cmd_out(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def machine_info(env):
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import ipykernel
    import jupyter_client
    build_type = ""
    cache = env.build_dir / "CMakeCache.txt"
    if cache.exists():
        m = re.search(r"^CMAKE_BUILD_TYPE:STRING=(.*)$", cache.read_text(errors="replace"), re.M)
        build_type = m.group(1) if m else ""
    git = cmd_out(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    virt = cmd_out(["systemd-detect-virt"]) or "unknown"
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "virtualization": virt,
        "mem_total_gib": round(meminfo()["MemTotal"] / 2**30, 1),
        "uid": os.getuid(),
        "python": platform.python_version(),
        "jupyter_client": jupyter_client.__version__,
        "ipykernel": ipykernel.__version__,
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "bwrap": cmd_out(["bwrap", "--version"]),
        "unshare": cmd_out(["unshare", "--version"]),
        "isolate": cmd_out([env.isolate, "--version"]),
        "build_dir": str(env.build_dir),
        "build_type": build_type,
        "binaries": env.binaries,
        "git": git,
    }
