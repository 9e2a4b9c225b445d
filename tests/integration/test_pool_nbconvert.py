"""Pooled kernels driven by `jupyter nbconvert --execute`, one process per
notebook as nbgrader runs them (docs/pool.md "Shutdown"), and what the
pooled kernel's shutdown keeps of a cold kernel's: the waiter freezes what
its imports built (gc.freeze), so neither the kernel's collections nor the
interpreter's exit walk it again, while what the notebook made is collected
and finalized as in a cold kernel; the claimed kernel's relay holds no
inotify watch once its clients are joined (a quick close at its exit); and
a claim that finds the pool still filling puts it behind its demand, whose
refills then wait at normal priority (docs/pool.md "Cost control"). Real
daemons, sandboxes, ipykernel kernels and nbconvert, as root and as the test
user (test_pool.py's fixtures).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kit.common import PYTHON, wait_until  # noqa: E402
from kit.kernel import run_cell, scenario, scenario_main, step  # noqa: E402
import test_pool  # noqa: E402
from test_pool import POOL_KERNEL, _fill, _ik, _start, _status, _stop, _wait_ready  # noqa: E402

# test_pool.py's fixtures (this module's client scenarios run from the
# session's script copy: kit/kernel.py SCRIPTS).
ph, pool_session = test_pool.ph, test_pool.pool_session


# What a pooled kernel must still do like a cold one: collect the notebook's
# cyclic garbage (the weakref callback runs), and at its exit finalize what
# the notebook left (a cycle with __del__, a file written and never closed).
CELLS = [
    "import gc\nfrozen = gc.get_freeze_count()\nprint('frozen', frozen)",
    "import weakref\nclass Node:\n    pass\nn = Node(); n.me = n\ngone = []\nweakref.finalize(n, gone.append, 1)\n"
    "del n\ngc.collect()\nprint('collected', gone == [1])",
    "class Bye:\n    def __del__(self):\n        open('bye.txt', 'w').write('bye')\nb = Bye(); b.me = b\n"
    "f = open('unclosed.txt', 'w'); f.write('data')\nprint('left', 6 * 7)",
]


def _notebook(path: Path):
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
              "source": src} for i, src in enumerate(CELLS)]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": POOL_KERNEL, "display_name": "x",
                                                                            "language": "python"}},
                                "nbformat": 4, "nbformat_minor": 5}))


def _stdout(nb: Path) -> list[str]:
    out = json.loads(nb.read_text())
    def text(o):  # a string, or its lines as stored on disk
        t = o.get("text", "")
        return "".join(t) if isinstance(t, list) else t
    return ["".join(text(o) for o in c["outputs"] if o.get("name") == "stdout").strip() for c in out["cells"]]


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _inotify_watches(pid: int) -> list[int]:
    """The number of watches of each inotify instance PID holds (its fdinfo's "inotify wd:" lines)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        out.append(sum(line.startswith("inotify wd:") for line in info.splitlines()))
    return out


# ----------------------------------------------------------- client side

@scenario
def nbconvert_loop(out, cwd, logdir, runs):
    cwd, logdir = Path(cwd), Path(logdir)
    with step(out, "fill") as s:
        s["ready"] = _fill(str(cwd), logdir / "prime.log")
    with step(out, "relay_watch") as s:
        # The claimed kernel's relay (in its helper) drops its directory watch
        # once every channel is joined, so the close at its exit is quick.
        km, kc = _start(str(cwd), logdir / "watch.log")
        s["claimed"] = "pool: claimed" in (logdir / "watch.log").read_text()
        kernel = int(re.search(r"kernel pid (\d+)", (logdir / "watch.log").read_text()).group(1))
        helper = _ppid(_ppid(kernel))  # kernel, sandbox init, helper
        s["works"] = run_cell(kc, "print(5*5)")["stdout"].strip()
        s["watches"] = wait_until(lambda: (lambda w: w if w and not any(w) else None)(_inotify_watches(helper)),
                                  10, 0.1) or _inotify_watches(helper)
        _stop(km, kc)
    out["runs"] = []
    for i in range(runs):
        r: dict = {}
        with step(r, "run") as s:
            d = cwd / f"run{i}"
            d.mkdir()
            _notebook(d / "nb.ipynb")
            s["ready_before"] = _wait_ready()  # each run claims: back to back would race the refill
            p = subprocess.run([PYTHON, "-m", "nbconvert", "--execute", "--to", "notebook",
                                f"--ExecutePreprocessor.kernel_name={POOL_KERNEL}", "--output", "out.ipynb",
                                "nb.ipynb"], cwd=d, capture_output=True, text=True, timeout=600)
            s["rc"], s["stderr"] = p.returncode, p.stderr[-3000:]
            s["claimed"] = "pool: claimed" in p.stderr  # the launcher's -v line, through nbconvert's stderr
            s["stdout"] = _stdout(d / "out.ipynb") if p.returncode == 0 else []
            # nbconvert returned: the kernel has exited (its launcher waited for it)
            s["files"] = {f: (d / f).read_text() if (d / f).exists() else None for f in ("bye.txt", "unclosed.txt")}
        out["runs"].append(r)
    out["status"] = _status()


@scenario
def behind(out, cwd, logdir):
    """A claim that finds no ready sandbox puts its pool behind its demand:
    the refill in flight is raised to nice 0, and so are the next ones."""
    logdir = Path(logdir)
    with step(out, "claim_while_filling") as s:
        s["start"] = _ik("pool", "start")  # fills the installed pooled kernelspec at nice 19 (or not: its key may differ)
        s["status_at_start"] = _status()
        km, kc = _start(str(cwd), logdir / "a.log")  # at once: nothing is ready yet, so this starts cold
        s["how"] = "claimed" if "pool: claimed" in (logdir / "a.log").read_text() else "cold"
        _stop(km, kc)
        s["ready"] = _wait_ready()
        st = _status()
        s["behind"] = [p.get("behind") for p in st["pools"]]
        s["refused"] = sum(p.get("refused", 0) for p in st["pools"])
        s["waiting"] = [(w["nice"], w["program_pid"]) for p in st["pools"] for w in p["waiting"]]
        s["text"] = _ik("pool", "status")["out"]
    with step(out, "next") as s:
        km, kc = _start(str(cwd), logdir / "b.log")  # the raised one
        s["how"] = "claimed" if "pool: claimed" in (logdir / "b.log").read_text() else "cold"
        _stop(km, kc)
        s["ready"] = _wait_ready()
        st = _status()
        s["waiting"] = [(w["nice"], w["program_pid"]) for p in st["pools"] for w in p["waiting"]]
        # Read here, while the sandbox waits: when the scenario returns, the
        # harness kills what is left of the test (the helpers' command lines
        # name the test's kernelspec), and a read after that raced the kill.
        s["autogroup"] = [_autogroup_nice(pid) for _, pid in s["waiting"]]


# ----------------------------------------------------------- pytest side

def test_nbconvert_runs_pooled_kernels_that_collect_and_finalize_as_cold_ones(ph):
    h = ph.h
    logs = h.mkdir(h.base / "logs")
    res = ph.h.scenario(__file__, "nbconvert_loop", env=ph.env(), timeout=3600, cwd=str(h.workdir),
                        logdir=str(logs), runs=2)
    assert "error" not in res["fill"] and res["fill"]["ready"], res.context()
    w = res["relay_watch"]
    assert "error" not in w and w["claimed"] and w["works"] == "25", w
    assert w["watches"] == [0], w  # one inotify instance (the relay's), its watch gone
    assert len(res["runs"]) == 2, res.context()
    for r in res["runs"]:
        s = r["run"]
        assert "error" not in s and s["rc"] == 0, s
        assert s["claimed"], s["stderr"]
        frozen, collected, left = s["stdout"]
        # the waiter froze what its imports built (ipykernel, IPython, zmq, tornado: many thousands of objects)
        assert frozen.startswith("frozen ") and int(frozen.split()[1]) > 10000, s["stdout"]
        assert collected == "collected True", s["stdout"]
        assert left == "left 42", s["stdout"]
        assert s["files"] == {"bye.txt": "bye", "unclosed.txt": "data"}, s
    pools = res["status"]["pools"]
    assert pools and pools[0]["claimed"] >= 2 and pools[0]["refused"] <= 1, pools  # the prime's claim is refused




def _autogroup_nice(pid: int) -> int:
    return int(re.search(r"nice (-?\d+)", Path(f"/proc/{pid}/autogroup").read_text()).group(1))


def test_a_claim_that_finds_the_pool_filling_raises_its_refills_to_normal_priority(ph):
    h = ph.h
    logs = h.mkdir(h.base / "logs")
    res = ph.h.scenario(__file__, "behind", env=ph.env(), timeout=3600, cwd=str(h.workdir), logdir=str(logs))
    a, b = res["claim_while_filling"], res["next"]
    assert "error" not in a and "error" not in b, res.context()
    assert a["start"]["rc"] == 0 and a["how"] == "cold" and a["refused"] >= 1, a
    assert a["ready"] and a["behind"] == [True], a
    assert "behind its demand" in a["text"] and "refills at normal priority" in a["text"], a["text"]
    # the sandbox that was filling when the claim came (or the refill it started) waits at nice 0, not 19
    assert [n for n, _ in a["waiting"]] == [0], a
    assert b["how"] == "claimed" and b["ready"], b
    # the pool is still behind (within the window): its next refill runs at nice 0 from the start
    assert [n for n, _ in b["waiting"]] == [0], b
    assert b["autogroup"] == [0], b  # the waiter itself, not only what the daemon reports


if __name__ == "__main__":
    scenario_main()
