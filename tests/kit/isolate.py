"""The `isolate` kit: the `sb` fixture and its Sandbox (tests/integration/test_isolate*.py,
test_mounts*.py, test_process.py, test_pty.py, ...).

Every test that takes the `sb` fixture runs twice: once as root ("root") and
once as the unprivileged user `iktest` ("user", started through setpriv).
Tests start real sandboxes with subprocess and assert on what they print.
Run as root (the brief's setting): root mode runs isolate as root, user mode
runs it as `iktest` (created with `useradd -m` when missing). Run as a normal
user: root mode is skipped and user mode runs isolate as that user.

Scratch files live under a 0755 directory in /tmp, owned by the user the
sandbox runs as; the binary is copied there when `iktest` cannot execute it
where it was built.

Environment:
  ISOLATE_BIN   the binary under test (default: <repo>/build/isolate)
  IK_TEST_USER  the unprivileged user (default: iktest)
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from kit.common import REPO, base_env, merge_env, ensure_test_user, resolve_mode, setpriv_prefix, user_can

DEFAULT_TIMEOUT = 30


# --------------------------------------------------------------- session setup


@pytest.fixture(scope="session")
def test_user() -> pwd.struct_passwd | None:
    return ensure_test_user()


@pytest.fixture(scope="session")
def session_dir():
    """A world-traversable scratch directory (parents of /tmp dirs are 0755)."""
    d = Path(tempfile.mkdtemp(prefix="ik-it-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def isolate_bin(test_user, session_dir) -> Path:
    path = Path(os.environ.get("ISOLATE_BIN", REPO / "build" / "isolate")).absolute()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"isolate binary not found at {path}: build it with "
                    "`cmake -S . -B build -DIK_BUILD_TESTS=OFF && "
                    "cmake --build build --target isolate` or set ISOLATE_BIN")
    if test_user is not None and os.geteuid() == 0 and not user_can(test_user.pw_name, "-x", path):
        bindir = session_dir / "bin"
        bindir.mkdir(mode=0o755)
        bindir.chmod(0o755)
        copy = bindir / "isolate"
        shutil.copy2(path, copy)
        copy.chmod(0o755)
        path = copy
    return path


# --------------------------------------------------------------- the runner


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.strip()

    def __str__(self) -> str:  # shown by pytest when an assert fails
        return (f"$ {' '.join(self.args)}\n-> exit {self.returncode}\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


class Sandbox:
    """Starts `isolate` as root or as the test user, in a private work dir."""

    def __init__(self, mode: str, binary: Path, pw: pwd.struct_passwd, workdir: Path):
        self.mode = mode
        self.binary = binary
        self.pw = pw
        self.user = pw.pw_name
        self.uid = pw.pw_uid
        self.gid = pw.pw_gid
        self.home = Path(pw.pw_dir)
        self.workdir = workdir          # cwd of every run unless told otherwise

    # -- files owned by the caller -----------------------------------------
    def chown(self, path: Path) -> Path:
        os.lchown(path, self.uid, self.gid)
        return path

    def mkdir(self, rel: str | Path, mode: int = 0o755) -> Path:
        p = self.workdir / rel
        parts = p.relative_to(self.workdir).parts
        cur = self.workdir
        for part in parts:
            cur = cur / part
            if not cur.exists():
                cur.mkdir(mode=mode)
                cur.chmod(mode)
                self.chown(cur)
        return p

    def write(self, rel: str | Path, text: str = "", mode: int = 0o644) -> Path:
        p = self.workdir / rel
        self.mkdir(p.parent.relative_to(self.workdir))
        p.write_text(text)
        p.chmod(mode)
        self.chown(p)
        return p

    def symlink(self, rel: str, target: str) -> Path:
        p = self.workdir / rel
        p.symlink_to(target)
        self.chown(p)
        return p

    # -- running -----------------------------------------------------------
    def env(self, extra: dict | None = None, cwd: Path | str | None = None) -> dict:
        e = base_env(self.user, self.home, {"PWD": str(cwd if cwd is not None else self.workdir)})
        return merge_env(e, extra)

    def argv(self, args, wrap=()) -> list[str]:
        """The command line: [WRAP...] [setpriv ... --] isolate ARGS."""
        cmd = [str(self.binary), *map(str, args)]
        if self.mode == "user":
            cmd = setpriv_prefix(self.user) + cmd
        return [*wrap, *cmd]

    def run(self, *args, cwd=None, env=None, input=None, timeout=DEFAULT_TIMEOUT) -> Result:
        cwd = Path(cwd) if cwd is not None else self.workdir
        cmd = self.argv(args)
        try:
            p = subprocess.run(cmd, cwd=cwd, env=self.env(env, cwd), input=input,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n"
                        f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}")
        return Result(cmd, p.returncode, p.stdout, p.stderr)

    def sh(self, script: str, *opts, **kw) -> Result:
        """isolate OPTS -- sh -c SCRIPT"""
        return self.run(*opts, "--", "sh", "-c", script, **kw)

    def py(self, code: str, *opts, **kw) -> Result:
        """isolate OPTS -- /usr/bin/python3 -c CODE"""
        return self.run(*opts, "--", "/usr/bin/python3", "-c", code, **kw)

    def popen(self, *args, cwd=None, env=None, wrap=(), **kw) -> subprocess.Popen:
        cwd = Path(cwd) if cwd is not None else self.workdir
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        return subprocess.Popen(self.argv(args, wrap), cwd=cwd, env=self.env(env, cwd), **kw)


@pytest.fixture(params=["root", "user"])
def sb(request, isolate_bin, test_user, session_dir):
    try:
        mode, pw = resolve_mode(request.param, test_user)
    except LookupError as e:
        pytest.skip(str(e))
    # HOME is the user's own: /root for root, /home/iktest for the test user.
    workdir = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=session_dir))
    workdir.chmod(0o755)
    s = Sandbox(mode, isolate_bin, pw, workdir)
    s.chown(workdir)
    yield s
    shutil.rmtree(workdir, ignore_errors=True)
