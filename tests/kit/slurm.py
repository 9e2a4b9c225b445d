"""A one-node Slurm cluster in a directory, for the tests and for people.

Debian 12's slurmctld, slurmd and munge run here without an init system: this
module writes a slurm.conf into a directory of its own, starts munged (as the
munge user, socket in that directory), slurmctld -D and slurmd -D with
SLURM_CONF pointing at that file, and waits until the node is idle. Every
state, spool, pid and log file lives in the directory; stopping cancels the
jobs first, then stops only the daemons this directory's pid files name (and
whose environment or command line names this directory), so nothing is left.

Must run as root (the daemons switch to the job's user). Jobs are submitted
by whoever uses `env()`: root or an unprivileged user, since the directory is
world-readable (the munge key is not in it).

A second node, ik-nouserns, can be started with user namespaces disabled for
real: its slurmd runs in a user namespace of its own that maps every uid (so
it still starts jobs as their users) and has user.max_user_namespaces=0 (a
per-namespace sysctl), so no job on it can create a user namespace, as on a
compute node whose admin set that sysctl.

Used by tests/integration/test_slurm*.py (the `slurm_cluster` fixture) and
scripts/slurm-local (start|stop|env for people and bench/run).

    c = SlurmCluster(Path("/tmp/ik-slurm")); c.start(); ...; c.stop()
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NODE = "ik-node"
NOUSERNS_NODE = "ik-nouserns"
MUNGE_KEY = Path("/etc/munge/munge.key")
DAEMONS = ("slurmd-" + NOUSERNS_NODE, "slurmd-" + NODE, "slurmctld", "munged")
PACKAGES = "slurmctld slurmd slurm-client munge"


class ClusterError(RuntimeError):
    pass


def missing_programs() -> list[str]:
    need = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "srun"]
    return [p for p in need if not (shutil.which(p) or Path("/usr/sbin", p).exists())]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _mentions(pid: int, marker: str) -> bool:
    """Whether the process's command line or environment names `marker`
    (the cluster directory): a pid file's pid may have been reused."""
    for f in ("cmdline", "environ"):
        try:
            if marker.encode() in Path(f"/proc/{pid}/{f}").read_bytes():
                return True
        except OSError:
            pass
    return False


class SlurmCluster:
    def __init__(self, base: Path, cpus: int | None = None, memory_mb: int = 4096,
                 nouserns_node: bool = False):
        self.base = Path(base).absolute()
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb
        self.nouserns_node = nouserns_node
        self.conf = self.base / "slurm.conf"
        self.munge_socket = self.base / "munge" / "munge.socket.2"
        self._children: list[subprocess.Popen] = []

    # ------------------------------------------------------------- queries

    def env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        return env

    def run(self, argv: list[str], user: str | None = None, timeout: float = 30,
            check: bool = False, **kw) -> subprocess.CompletedProcess:
        """Runs a Slurm command (as `user` through setpriv when given)."""
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] + argv
        r = subprocess.run(argv, env=kw.pop("env", self.env()), capture_output=True, text=True,
                           timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise ClusterError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
        return r

    def node_states(self) -> dict[str, str]:
        r = self.run(["sinfo", "-h", "-N", "-o", "%N %T"], timeout=10)
        if r.returncode != 0:
            return {}
        return dict(line.split() for line in r.stdout.splitlines() if len(line.split()) == 2)

    def jobs(self) -> list[str]:
        r = self.run(["squeue", "-h", "-o", "%i"], timeout=10)
        return r.stdout.split() if r.returncode == 0 else []

    def pidfile(self, name: str) -> Path:
        return self.base / "run" / f"{name}.pid"

    # ------------------------------------------------------------- start

    def write_conf(self) -> None:
        host = socket.gethostname().split(".")[0]  # slurmctld compares it with SlurmctldHost
        b = self.base
        nodes = [f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={host} Port={_free_port()} "
                 f"CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN"]
        parts = [f"PartitionName=ik Nodes={NODE} Default=YES MaxTime=INFINITE State=UP"]
        if self.nouserns_node:
            nodes.append(f"NodeName={NOUSERNS_NODE} NodeAddr=127.0.0.1 NodeHostname={host} Port={_free_port()} "
                         f"CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN")
            parts.append(f"PartitionName=nouserns Nodes={NOUSERNS_NODE} Default=NO MaxTime=INFINITE State=UP")
        text = f"""\
# Written by tests/kit/slurm.py: a one-node cluster in {b}
ClusterName=ik
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool/%n
SlurmctldPidFile={b}/run/slurmctld-own.pid
SlurmdPidFile={b}/run/slurmd-%n-own.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd-%n.log
SlurmdParameters=config_overrides
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=512
MinJobAge=2
ReturnToService=2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
{chr(10).join(nodes)}
{chr(10).join(parts)}
"""
        self.conf.write_text(text)
        self.conf.chmod(0o644)

    def _spawn(self, name: str, argv: list[str], env: dict) -> None:
        log = open(self.base / "log" / f"{name}.out", "ab")
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)
        log.close()
        self._children.append(p)
        self.pidfile(name).write_text(f"{p.pid}\n")

    def _wait(self, what: str, cond, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            for p in self._children:
                if p.poll() is not None:
                    raise ClusterError(f"{what}: {p.args[0]} exited with {p.returncode}; "
                                       f"see {self.base}/log")
            time.sleep(0.1)
        raise ClusterError(f"{what}: not within {timeout:.0f} s; see {self.base}/log")

    def start(self, timeout: float = 60) -> "SlurmCluster":
        if os.geteuid() != 0:
            raise ClusterError("the test cluster's daemons must be started as root")
        if missing := missing_programs():
            raise ClusterError(f"missing {' '.join(missing)}: apt-get install --no-install-recommends {PACKAGES}")
        if not MUNGE_KEY.exists():
            raise ClusterError(f"{MUNGE_KEY} missing: create it with mungekey (package munge)")
        munge = pwd.getpwnam("munge")
        # munged refuses a key that others can read.
        os.chown(MUNGE_KEY, munge.pw_uid, munge.pw_gid)
        MUNGE_KEY.chmod(0o400)
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)
        for d in ("state", "spool", "run", "log", "munge", "jobs"):
            (self.base / d).mkdir(exist_ok=True)
            (self.base / d).chmod(0o755)
        (self.base / "jobs").chmod(0o1777)  # job output of any user
        os.chown(self.base / "munge", munge.pw_uid, munge.pw_gid)
        self.write_conf()
        try:
            self._start_daemons(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_daemons(self, timeout: float) -> None:
        env = self.env({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        m = self.base / "munge"
        self._spawn("munged", ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "--",
                               "munged", "--foreground", f"--socket={self.munge_socket}",
                               f"--key-file={MUNGE_KEY}", f"--pid-file={m}/munged.pid",
                               f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed"], env)
        self._wait("munged", self.munge_socket.exists, 15)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"], env)
        self._spawn("slurmd-" + NODE, ["slurmd", "-D", "-N", NODE], env)
        if self.nouserns_node:
            # A user namespace that maps every uid and gid (slurmd still runs
            # the jobs as their users) in which no further user namespace can
            # be created: the sysctl is per user namespace.
            # unshare(1) maps ranges through newuidmap (not installed), so
            # the maps are written from here, as root, once the namespace exists.
            # The shell exec'd before the maps existed has no capabilities
            # (uid unmapped at execve); the second one, uid 0, has them all.
            script = ("while ! grep -q . /proc/self/uid_map; do sleep 0.05; done; "
                      "exec sh -c 'echo 0 > /proc/sys/user/max_user_namespaces && "
                      f"exec slurmd -D -N {NOUSERNS_NODE}'")
            name = "slurmd-" + NOUSERNS_NODE
            self._spawn(name, ["unshare", "--user", "--", "sh", "-c", script], env)
            pid = self._children[-1].pid
            own_ns = os.readlink("/proc/self/ns/user")
            self._wait("user namespace of " + name, lambda: os.readlink(f"/proc/{pid}/ns/user") != own_ns, 10)
            for f in ("uid_map", "gid_map"):
                Path(f"/proc/{pid}/{f}").write_text("0 0 4294967295\n")
        want = [NODE] + ([NOUSERNS_NODE] if self.nouserns_node else [])
        self._wait("nodes idle", lambda: all(self.node_states().get(n) == "idle" for n in want), timeout)

    # ------------------------------------------------------------- stop

    def stop(self, timeout: float = 30) -> list[str]:
        """Cancels every job, waits for them to end, stops the daemons this
        directory started. Returns what had to be killed (should be empty)."""
        forced: list[str] = []
        if self.conf.exists() and self._pid("slurmctld"):
            self.run(["scancel", "--full", "--quiet"] + self.jobs(), timeout=10) if self.jobs() else None
            deadline = time.monotonic() + timeout
            while self.jobs() and time.monotonic() < deadline:
                time.sleep(0.2)
        # Job steps outlive slurmd with proctrack/linuxproc: they inherit
        # slurmd's environment (SLURM_CONF names this directory).
        deadline = time.monotonic() + 10
        while self._stepds() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self._stepds():
            forced.append(f"slurmstepd {pid}")
            os.kill(pid, signal.SIGKILL)
        for name in DAEMONS:
            pid = self._pid(name)
            if pid is None:
                self.pidfile(name).unlink(missing_ok=True)
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.05)
            if _alive(pid):
                forced.append(f"{name} {pid}")
                os.killpg(pid, signal.SIGKILL)
            self._reap()
            self.pidfile(name).unlink(missing_ok=True)
        for p in self._children:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._children.clear()
        return forced

    def _reap(self) -> None:
        for p in self._children:
            p.poll()

    def _pid(self, name: str) -> int | None:
        try:
            pid = int(self.pidfile(name).read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and _mentions(pid, str(self.base)) else None

    def _stepds(self) -> list[int]:
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if d.joinpath("comm").read_text().strip() != "slurmstepd":
                    continue
            except OSError:
                continue
            if _mentions(int(d.name), str(self.conf)) and _alive(int(d.name)):
                out.append(int(d.name))
        return out

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
