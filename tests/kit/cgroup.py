"""The cgroup kit: cgroup v2 fixtures for the limit tests (tests/security/test_cgroup.py).

`cgroup_takeover` (session): only as root AND with IK_CGROUP_TAKEOVER=1 (set
on throwaway CI machines), hands the pids controller to cgroup v2 on a hybrid
host: it unmounts the cgroup v1 pids hierarchy when that has no child
cgroups, and waits for the kernel to offer `pids` in the v2 root's
cgroup.controllers. At the end of the session it gives it back (disables
pids in the v2 root, mounts the v1 hierarchy again). The memory controller
is never touched. Without the variable it does nothing and says why.

`delegated_cgroup` (function): as root, a cgroup under the v2 root handed to
the unprivileged test user the way systemd's Delegate=yes does (the
directory and its cgroup.procs, cgroup.threads, cgroup.subtree_control
chowned to the user), with the controllers asked for enabled above it. A
command is started *alone* inside it, like `systemd-run --user --scope -p
Delegate=yes CMD` does, through `preexec`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import subprocess
from pathlib import Path

import pytest

from kit.common import wait_until

TAKEOVER_ENV = "IK_CGROUP_TAKEOVER"


def unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def cgroup_mounts() -> list[dict]:
    """Every cgroup file system in our mountinfo: {type, mount_point, root, options}."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if "-" not in fields:
                continue
            dash = fields.index("-")
            fstype = fields[dash + 1]
            if fstype not in ("cgroup", "cgroup2"):
                continue
            out.append({"type": fstype, "root": unescape(fields[3]), "mount_point": unescape(fields[4]),
                        "options": fields[dash + 3].split(",") if len(fields) > dash + 3 else []})
    return out


def v2_root() -> Path | None:
    """The cgroup2 mount whose root is the hierarchy's root (not assumed to be /sys/fs/cgroup)."""
    for m in cgroup_mounts():
        if m["type"] == "cgroup2" and m["root"] == "/":
            return Path(m["mount_point"])
    return None


def v1_holder(controller: str) -> str | None:
    for m in cgroup_mounts():
        if m["type"] == "cgroup" and controller in m["options"]:
            return m["mount_point"]
    return None


def v1_hierarchy_id(controller: str) -> int:
    """The v1 hierarchy a controller is bound to (/proc/cgroups), 0 when it is on cgroup v2."""
    with open("/proc/cgroups") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == controller:
                return int(fields[1])
    return 0


def controllers(path: Path) -> set[str]:
    try:
        return set((path / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def subtree_control(path: Path) -> set[str]:
    try:
        return set((path / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()


def own_cgroup(pid: int | str = "self") -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].rstrip("\n")
    return ""


def remove_tree(path: Path) -> None:
    """rmdir a cgroup and its children, depth first (cgroups hold no regular files)."""
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.is_dir():
            remove_tree(child)
    with contextlib.suppress(OSError):
        path.rmdir()


class Takeover:
    """What the session did to hand controllers to cgroup v2, and how to undo it."""

    def __init__(self):
        self.root = v2_root()
        self.pids = False
        self.reason = ""
        self.unmounted: dict[str, str] = {}   # controller -> v1 mount point we unmounted
        self.root_subtree_before = subtree_control(self.root) if self.root else set()

    def take(self, controller: str) -> bool:
        if self.root is None:
            self.reason = "no cgroup v2 mounted"
            return False
        if controller in controllers(self.root):
            return True
        mp = v1_holder(controller)
        if mp is None:
            self.reason = f"the {controller} controller is neither on cgroup v2 nor on a cgroup v1 mount"
            return False
        children = [p.name for p in Path(mp).iterdir() if p.is_dir()]
        if children:
            self.reason = f"the cgroup v1 {controller} hierarchy at {mp} has child cgroups ({', '.join(children[:3])})"
            return False
        r = subprocess.run(["umount", mp], capture_output=True, text=True)
        if r.returncode != 0:
            self.reason = (f"cannot hand {controller} to cgroup v2: umount {mp}: {r.stderr.strip()} "
                           f"(a process keeps the v1 hierarchy open, so the kernel cannot release {controller})")
            return False
        self.unmounted[controller] = mp
        # The kernel frees the v1 hierarchy asynchronously after the last unmount.
        if wait_until(lambda: controller in controllers(self.root), 10):
            return True
        self.reason = f"{controller} did not appear in {self.root}/cgroup.controllers within 10 s of umount {mp}"
        if v1_hierarchy_id(controller):
            self.reason += (f": the kernel keeps the v1 {controller} hierarchy alive (/proc/cgroups), because a "
                            f"process still holds a file of it open")
        self.give_back(controller)
        return False

    def give_back(self, controller: str) -> str | None:
        mp = self.unmounted.pop(controller, None)
        if mp is None:
            return None
        # A controller can return to v1 only once no v2 cgroup uses it.
        if controller in subtree_control(self.root) and controller not in self.root_subtree_before:
            with contextlib.suppress(OSError):
                (self.root / "cgroup.subtree_control").write_text(f"-{controller}")
        r = subprocess.run(["mount", "-t", "cgroup", "-o", controller, "cgroup", mp], capture_output=True, text=True)
        if r.returncode != 0:
            return f"could not give {controller} back to cgroup v1 at {mp}: {r.stderr.strip()}"
        return None


@pytest.fixture(scope="session")
def cgroup_takeover():
    t = Takeover()
    if os.environ.get(TAKEOVER_ENV) != "1":
        t.reason = f"{TAKEOVER_ENV}=1 is not set (it rearranges the host's cgroups: throwaway machines only)"
    elif os.geteuid() != 0:
        t.reason = "taking a controller over needs root"
    else:
        t.pids = t.take("pids")
    yield t
    if t.root is not None:
        for child in t.root.iterdir():
            if child.is_dir() and child.name.startswith("ik-test-deleg-"):
                remove_tree(child)
    for controller in list(t.unmounted):
        problem = t.give_back(controller)
        if problem:
            print(f"\nWARNING: {problem}; {controller} stays on cgroup v2")


class Delegated:
    def __init__(self, root: Path, user: pwd.struct_passwd, enable: list[str]):
        self.root = root
        self.user = user
        self.path = root / f"ik-test-deleg-{secrets.token_hex(4)}"
        self.enabled_in_root: list[str] = []
        for c in enable:
            # What systemd does for a delegated unit: its parent passes the controller down.
            if c not in subtree_control(root):
                (root / "cgroup.subtree_control").write_text(f"+{c}")
                self.enabled_in_root.append(c)
        self.path.mkdir()
        for p in (self.path, self.path / "cgroup.procs", self.path / "cgroup.threads",
                  self.path / "cgroup.subtree_control"):
            os.chown(p, user.pw_uid, user.pw_gid)

    def preexec(self):
        """For subprocess(preexec_fn=...): runs as root in the child before exec (setpriv keeps the pid)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def close(self):
        remove_tree(self.path)
        for c in self.enabled_in_root:
            with contextlib.suppress(OSError):
                (self.root / "cgroup.subtree_control").write_text(f"-{c}")


@pytest.fixture
def delegated_cgroup():
    """Factory: delegated_cgroup(user, enable=[...]) -> Delegated (root only)."""
    made: list[Delegated] = []

    def make(user: pwd.struct_passwd, enable=()):
        root = v2_root()
        if os.geteuid() != 0 or root is None:
            pytest.skip("delegating a cgroup needs root and a cgroup v2")
        d = Delegated(root, user, list(enable))
        made.append(d)
        return d
    yield make
    for d in made:
        d.close()
