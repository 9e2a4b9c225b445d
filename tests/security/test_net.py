"""Network containment: host loopback services (TCP, UDP, abstract and path
unix sockets), the outside world (DNS, public addresses).

The host side runs listeners (see HostServices in tests/kit/security.py) that count
every contact; each test asserts on the sandbox's errors AND on the host's
counters.
"""

from __future__ import annotations

import socket
import time

import pytest

SANDBOX_OPTS: list[str] = []


def host_addresses() -> list[str]:
    """The host's own non-loopback IPv4 addresses (best effort)."""
    addrs = set()
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("10.255.255.255", 1))
        addrs.add(s.getsockname()[0])
        s.close()
    except OSError:
        pass
    return sorted(a for a in addrs if not a.startswith("127."))


def settle(runner, before: dict, kinds) -> dict:
    time.sleep(0.3)
    after = runner.ctx.sec.services.snapshot()
    return {k: after[k] - before[k] for k in kinds}


TCP = r'''
res = {}
for host in ["127.0.0.1", "localhost"] + P["host_addrs"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    res[host] = attempt(s.connect, (host, P["tcp_port"]))
    s.close()
s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); s6.settimeout(3)
res["::1"] = attempt(s6.connect, ("::1", P["tcp_port"])); s6.close()
emit(res)
'''


def test_host_loopback_tcp_unreachable(runner):
    """A TCP service on the host's 127.0.0.1 (think: the Jupyter server's REST API) is unreachable."""
    before = runner.ctx.sec.services.snapshot()
    addrs = host_addresses()
    r = runner.probe(TCP, params={"host_addrs": addrs})
    assert r["127.0.0.1"] == ["err", "ECONNREFUSED"], r
    assert r["localhost"][0] == "err" and r["::1"][0] == "err", r
    for a in addrs:
        assert r[a][0] == "err" and r[a][1] in ("ENETUNREACH", "EHOSTUNREACH", "ECONNREFUSED"), (a, r)
    assert settle(runner, before, ["tcp"]) == {"tcp": 0}


def test_control_share_net_reaches_host_tcp(runner):
    """Control: the same probe with --share-net does reach the host listener (the probe can fail)."""
    if runner.kind == "kernel":
        pytest.skip("control run under isolate only")
    before = runner.ctx.sec.services.snapshot()
    r = runner.probe(TCP, opts=["--share-net"], params={"host_addrs": []})
    assert r["127.0.0.1"][0] == "ok", r
    assert settle(runner, before, ["tcp"])["tcp"] >= 1


UDP = r'''
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
res = {"send": attempt(s.sendto, b"ik-udp-probe", ("127.0.0.1", P["udp_port"]))}
s.settimeout(0.5)
res["recv"] = attempt(s.recvfrom, 100)
s.close()
emit(res)
'''


def test_host_loopback_udp_unreachable(runner):
    """A datagram to a UDP port on the host's 127.0.0.1 never arrives."""
    before = runner.ctx.sec.services.snapshot()
    r = runner.probe(UDP)
    # Inside, lo exists: the send succeeds or reports the (local) port unreachable.
    assert r["send"][0] == "ok" or r["send"][1] == "ECONNREFUSED", r
    assert settle(runner, before, ["udp"]) == {"udp": 0}, r


ABSTRACT = r'''
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
res = {"connect": attempt(s.connect, "\0" + P["abstract_name"])}
s.close()
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
res["dgram"] = attempt(d.sendto, b"x", "\0" + P["abstract_name"])
d.close()
res["listed"] = P["abstract_name"] in read_text("/proc/net/unix")
emit(res)
'''


def test_host_abstract_unix_socket_unreachable(runner):
    """An abstract unix socket bound on the host ("\\0ik-secret-...") is unreachable and unlisted."""
    before = runner.ctx.sec.services.snapshot()
    r = runner.probe(ABSTRACT)
    assert r["connect"] == ["err", "ECONNREFUSED"], r
    assert r["dgram"][0] == "err", r
    assert r["listed"] is False, r
    assert settle(runner, before, ["abstract"]) == {"abstract": 0}


PATH_UNIX = r'''
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
res = {"connect": attempt(s.connect, P["unix_path"]), "exists": os.path.lexists(P["unix_path"])}
s.close()
emit(res)
'''


def test_host_path_unix_socket_unreachable(runner):
    """A 0777 unix socket in a host directory that is not mounted cannot be reached."""
    before = runner.ctx.sec.services.snapshot()
    r = runner.probe(PATH_UNIX)
    assert r["connect"] == ["err", "ENOENT"] and r["exists"] is False, r
    assert settle(runner, before, ["unix_path"]) == {"unix_path": 0}


OUTSIDE = r'''
res = {"ifaces": [n for _, n in socket.if_nameindex()]}
try:
    res["dns"] = ["ok", sorted({a[4][0] for a in socket.getaddrinfo("example.com", 80)})]
except socket.gaierror as e:
    res["dns"] = ["gaierror", e.errno]
except OSError as e:
    res["dns"] = ["err", ename(e.errno)]
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.settimeout(3)
res["tcp_8888"] = attempt(t.connect, ("8.8.8.8", 53)); t.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
res["udp_8888"] = attempt(u.sendto, b"\0" * 12, ("8.8.8.8", 53)); u.close()
t6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); t6.settimeout(3)
res["tcp6"] = attempt(t6.connect, ("2001:4860:4860::8888", 53)); t6.close()
emit(res)
'''


def test_no_outside_network_and_no_dns(runner):
    """Only lo exists; DNS resolution fails; public addresses are unreachable (ENETUNREACH)."""
    r = runner.probe(OUTSIDE)
    assert r["ifaces"] == ["lo"], r
    assert r["dns"][0] != "ok", r
    assert r["tcp_8888"] == ["err", "ENETUNREACH"] and r["udp_8888"] == ["err", "ENETUNREACH"], r
    assert r["tcp6"][0] == "err", r
