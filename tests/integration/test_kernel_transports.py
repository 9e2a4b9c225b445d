"""The launcher with the other ways a kernel can be reached: a client that
uses transport "ipc" (the host side binds ipc sockets, the relay still cuts
the network), and --share-net (no relay: the kernel binds the host's tcp
ports itself, as isolate.sh did). Root and unprivileged user; the ipc
client also against pooled kernels (a --share-net tcp kernel is never
pooled)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kit.kernel import START_TIMEOUT, run_cell, scenario, scenario_main, step

PROBE = ("import os, socket\n"
         "ifs = sorted(n for _, n in socket.if_nameindex())\n"
         "print(os.getcwd(), ifs)")


def _spec_dir(base: Path, name: str, argv: list[str]) -> Path:
    d = base / "kernels" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "kernel.json").write_text(json.dumps({
        "argv": argv, "display_name": name, "language": "python",
        "interrupt_mode": "signal"}))
    for p in [base, *base.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return base


@scenario
def transport(out, kernel: str, transport: str, ip: str):
    from jupyter_client.manager import KernelManager
    km = KernelManager(kernel_name=kernel, transport=transport, ip=ip)
    km.start_kernel(cwd=os.getcwd())
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=START_TIMEOUT)
        with step(out, "probe") as s:
            s.update(run_cell(kc, PROBE))
            s["connection"] = json.loads(Path(km.connection_file).read_text())
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    out["ipc_files_after"] = sorted(f for f in os.listdir(os.path.dirname(ip) or ".")
                                    if f.startswith(os.path.basename(ip)))


@pytest.mark.parametrize("variant", ["ipc-relay", "tcp-share-net"])
def test_transport_variants(khost, variant):
    if khost.pooled and variant == "tcp-share-net":
        pytest.skip("a --share-net tcp kernel is never pooled: it binds the host's ports itself (docs/pool.md)")
    opts = ("--share-net",) if variant == "tcp-share-net" else ()
    argv = khost.kernelspec_argv(*opts)
    jdir = _spec_dir(khost.mkdir(khost.base / "jp-transport"), "ik-transport", argv)
    work = khost.workdir
    transport_name = "ipc" if variant == "ipc-relay" else "tcp"
    ip = str(work / "sock") if transport_name == "ipc" else "127.0.0.1"
    env = {"JUPYTER_PATH": str(jdir)}
    khost.pool_ready_argv(argv, env=env)
    r = khost.scenario(__file__, "transport", env=env, kernel="ik-transport", transport=transport_name, ip=ip)
    probe = r["probe"]
    assert probe["connection"]["transport"] == transport_name
    text = probe["stdout"]
    assert str(khost.workdir) in text, probe  # the cell ran, in its working directory
    if variant == "ipc-relay":
        assert "['lo']" in text, probe        # still no network inside
    else:
        assert "['lo']" not in text, probe    # the host's interfaces
    assert r["ipc_files_after"] == [], r.data  # host-side ipc sockets cleaned up
    assert r.leftovers == []


if __name__ == "__main__":
    scenario_main()
