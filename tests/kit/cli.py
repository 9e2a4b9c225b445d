"""The `isolated-kernel` kit (the management program): the `tools` and `jup`
fixtures (test_kernelspec_cli.py, test_autograde.py, test_user_messages.py,
test_notebook_browser.py, and the browser kit).

Every command runs as root or as the unprivileged test user (through
setpriv, like kit/isolate.py's `sb` fixture) with its own Jupyter directories:
JUPYTER_PATH, JUPYTER_DATA_DIR, JUPYTER_CONFIG_DIR and JUPYTER_RUNTIME_DIR
under a per-test scratch directory. When the tests run as root, each command
also runs in a private mount namespace (unshare -m) in which a scratch
directory is bind-mounted over /usr/local/share/jupyter: the system-wide
default of `isolated-kernel install` lands there instead of the real system
directory, and kernelspecs a real installation put there stay out of sight.

The binaries are copied into a session directory laid out like an
installation (bin/ and share/isolated-kernel/kernelspecs/ from the source
tree), readable by the test user, and their paths mark our processes. The
client scripts (kit/exec_client.py, test_autograde.py) are copied there too.

Environment:
  IK_BUILD_DIR  where the built programs are (default: <repo>/build)
  IK_TEST_USER  the unprivileged user (default: iktest)
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from kit.common import (KIT, PYTHON, REPO, SAFE_PATH, TESTS, UNSHARE, base_env, ensure_test_user, kill_matching,
                        merge_env, resolve_mode, setpriv_prefix)

PROGRAMS = ("isolated-kernel", "isolated-kernel-launcher", "isolate")
TEMPLATE = REPO / "kernelspecs" / "python3-isolated"
IPYKERNEL_SPEC = Path("/usr/share/jupyter/kernels/python3")
SYSTEM_JUPYTER = Path("/usr/local/share/jupyter")
# The client scripts the commands run, copied where the test user can read them.
CLIENT_SCRIPTS = (KIT / "exec_client.py", TESTS / "integration" / "test_autograde.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def build_dir() -> Path:
    return Path(os.environ.get("IK_BUILD_DIR", REPO / "build")).absolute()


def make_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid, uniformly coloured RGB PNG (for fake kernelspec logos)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" + bytes(rgb) * width
    return (PNG_MAGIC + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


# --------------------------------------------------------------- session


@dataclass
class Tools:
    root: Path          # session scratch dir, 0755
    bin: Path           # copies of isolated-kernel, isolated-kernel-launcher, isolate
    scripts: Path       # client scripts readable by the test user
    test_user: pwd.struct_passwd | None

    @property
    def ik(self) -> Path:
        return self.bin / "isolated-kernel"

    @property
    def launcher(self) -> Path:
        return self.bin / "isolated-kernel-launcher"

    @property
    def template(self) -> Path:
        return self.root / "share" / "isolated-kernel" / "kernelspecs" / "python3-isolated"


def make_tools() -> Tools:
    """Copies the programs into a fresh session dir laid out like an installation."""
    src = build_dir()
    missing = [p for p in PROGRAMS if not os.access(src / p, os.X_OK)]
    if missing:
        raise FileNotFoundError(f"not built in {src}: {', '.join(missing)} (cmake --build build, or set IK_BUILD_DIR)")
    test_user = ensure_test_user()
    root = Path(tempfile.mkdtemp(prefix="ik-cli-", dir="/tmp"))
    root.chmod(0o755)
    b = root / "bin"
    b.mkdir(mode=0o755)
    for p in PROGRAMS:
        shutil.copy2(src / p, b / p)
        (b / p).chmod(0o755)
    # The source tree's template, where the installed layout puts it
    # (bin/../share/isolated-kernel/kernelspecs/python3-isolated).
    tdir = root / "share" / "isolated-kernel" / "kernelspecs"
    tdir.mkdir(parents=True)
    shutil.copytree(TEMPLATE, tdir / "python3-isolated")
    scripts = root / "scripts"
    scripts.mkdir()
    for s in CLIENT_SCRIPTS:
        shutil.copy2(s, scripts / s.name)
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() or os.access(p, os.X_OK) else 0o644)
    return Tools(root, b, scripts, test_user)


def cleanup_tools(tools: Tools) -> None:
    kill_matching([str(tools.root)])
    shutil.rmtree(tools.root, ignore_errors=True)


_TOOLS: list[Tools] = []


def get_tools() -> Tools:
    """The session's Tools, made once for all the modules that use them."""
    if not _TOOLS:
        import atexit
        _TOOLS.append(make_tools())
        atexit.register(cleanup_tools, _TOOLS[0])
    return _TOOLS[0]


def make_venv(tools: Tools, j: "Jupyter", name: str, system_site_packages: bool) -> Path:
    """A venv owned by J's user (created as that user), without pip: fast and offline."""
    d = tools.root / f"venv-{j.mode}-{name}"
    if not (d / "bin" / "python").exists():
        args = [PYTHON, "-m", "venv", "--without-pip"]
        if system_site_packages:
            args.append("--system-site-packages")
        cmd = (setpriv_prefix(j.user) if j.mode == "user" else []) + args + [str(d)]
        if j.mode == "user":
            # the session dir is root's: make D first, the user's own
            d.mkdir(mode=0o755, exist_ok=True)
            os.chown(d, j.uid, j.gid)
        subprocess.run(cmd, check=True, env={"PATH": SAFE_PATH, "HOME": str(j.home), "LANG": "C.UTF-8"},
                       cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    return d


# --------------------------------------------------------------- per test


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return (f"$ {' '.join(map(str, self.args))}\n-> exit {self.returncode} after {self.elapsed:.1f}s\n"
                f"--- stdout\n{self.stdout[-5000:]}\n--- stderr\n{self.stderr[-5000:]}")

    __repr__ = __str__


class Jupyter:
    """One test's Jupyter world, used as root or as the test user."""

    def __init__(self, mode: str, pw: pwd.struct_passwd, tools: Tools, base: Path):
        self.mode = mode                  # "root", "user" (setpriv to iktest) or "self" (not root)
        self.pw = pw
        self.user = pw.pw_name
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.home = Path(pw.pw_dir)
        self.tools = tools
        self.base = base
        self.namespaced = os.geteuid() == 0
        # Stands in for /usr/local/share/jupyter (root-owned, like the real one).
        self.sysroot = base / "system"
        self.sysroot.mkdir(mode=0o755)
        (self.sysroot / "jupyter").mkdir(mode=0o755)
        self.jupyter_path = self.mkdir(base / "jupyter-path")
        self.data_dir = self.mkdir(base / "data")
        self.config_dir = self.mkdir(base / "config", 0o700)
        self.runtime_dir = self.mkdir(base / "runtime", 0o700)
        self.work = self.mkdir(base / "work")
        self.token = uuid.uuid4().hex[:10]

    # -- where things are ------------------------------------------------------
    @property
    def system_kernels(self) -> Path:
        """What the commands see as /usr/local/share/jupyter/kernels."""
        return self.sysroot / "jupyter" / "kernels"

    def seen(self, path: Path) -> str:
        """PATH as the commands see it (the system dir stand-in is mounted over the real one)."""
        try:
            rel = path.relative_to(self.sysroot / "jupyter")
        except ValueError:
            return str(path)
        return str(SYSTEM_JUPYTER / rel) if self.namespaced else str(path)

    @property
    def user_kernels(self) -> Path:
        return self.data_dir / "kernels"

    # -- files owned by the caller --------------------------------------------
    def chown(self, path: Path) -> Path:
        if os.geteuid() == 0:
            os.lchown(path, self.uid, self.gid)
        return path

    def chown_tree(self, path: Path) -> Path:
        for p in [path, *path.rglob("*")]:
            self.chown(p)
        return path

    def mkdir(self, path: Path, mode: int = 0o755) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        return self.chown(path)

    def write(self, path: Path, data, mode: int = 0o644) -> Path:
        self.mkdir(path.parent)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        path.chmod(mode)
        return self.chown(path)

    def add_kernelspec(self, name: str, spec: dict, files: dict | None = None) -> Path:
        """A kernelspec in JUPYTER_PATH/kernels/NAME (not isolated, like a user's own)."""
        d = self.mkdir(self.jupyter_path / "kernels" / name)
        self.write(d / "kernel.json", json.dumps(spec, indent=1) + "\n")
        for fname, data in (files or {}).items():
            self.write(d / fname, data)
        return d

    # -- running ---------------------------------------------------------------
    def env(self, extra: dict | None = None) -> dict:
        e = base_env(self.user, self.home, {
            "JUPYTER_PATH": str(self.jupyter_path),
            "JUPYTER_DATA_DIR": str(self.data_dir),
            "JUPYTER_CONFIG_DIR": str(self.config_dir),
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        })
        return merge_env(e, extra)

    def argv(self, args) -> list[str]:
        cmd = [str(a) for a in args]
        if self.mode == "user":
            cmd = setpriv_prefix(self.user) + cmd
        if self.namespaced:
            if SYSTEM_JUPYTER.is_dir():
                src, target = self.sysroot / "jupyter", SYSTEM_JUPYTER
            else:
                src, target = self.sysroot, SYSTEM_JUPYTER.parent
            script = 'src=$1; dst=$2; shift 2; mount --bind "$src" "$dst"; exec "$@"'
            cmd = [UNSHARE, "--mount", "--propagation", "private", "--", "/bin/sh", "-ec", script, "sh",
                   str(src), str(target), *cmd]
        return cmd

    def run(self, args, cwd=None, env=None, timeout=180) -> Run:
        cmd = self.argv(args)
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, cwd=cwd or self.work, env=self.env(env), text=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            self.kill_leftovers()
            raise AssertionError(f"timed out after {timeout}s: {' '.join(cmd)}\n--- stdout\n{out[-4000:]}\n"
                                 f"--- stderr\n{err[-4000:]}")
        return Run(cmd, p.returncode, out, err, time.monotonic() - t0)

    def ik(self, *args, env=None, cwd=None, timeout=180) -> Run:
        """isolated-kernel ARGS"""
        return self.run([self.tools.ik, *args], cwd=cwd, env=env, timeout=timeout)

    def kernelspecs(self, env=None, python: str = PYTHON) -> dict:
        """`jupyter kernelspec list --json` as the caller sees it."""
        r = self.run([python, "-m", "jupyter_client.kernelspecapp", "list", "--json"], env=env)
        assert r.returncode == 0, str(r)
        return json.loads(r.stdout)["kernelspecs"]

    def kernel_exec(self, kernel: str, code: str, cwd: Path | None = None, env=None) -> dict:
        """Starts KERNEL in CWD, runs CODE, returns {"stdout", "reply", "kernel_info", ...}."""
        r = self.run([PYTHON, self.tools.scripts / "exec_client.py", "exec", kernel, cwd or self.work, code],
                     env=env, timeout=120)
        try:
            data = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise AssertionError(f"kernel client printed no result\n{r}")
        data["_run"] = str(r)
        return data

    def kill_leftovers(self) -> None:
        kill_matching([str(self.base)])

    def close(self) -> None:
        self.kill_leftovers()


def make_jupyter(mode: str, tools: Tools, name: str) -> Jupyter:
    """A Jupyter for MODE "root" or "user"; raises LookupError (the skip reason) when impossible."""
    mode, pw = resolve_mode(mode, tools.test_user)
    safe = "".join(c if c.isalnum() else "-" for c in name)[:50]
    base = Path(tempfile.mkdtemp(prefix=f"{mode}-{safe}-", dir=tools.root))
    base.chmod(0o755)
    return Jupyter(mode, pw, tools, base)


def read_spec(d: Path) -> dict:
    return json.loads((d / "kernel.json").read_text())


def after_dashdash(argv: list[str]) -> list[str]:
    return argv[argv.index("--") + 1:] if "--" in argv else []


def settings(spec: dict) -> dict:
    return spec.get("metadata", {}).get("isolated_kernel", {})


def tree_snapshot(d: Path) -> dict:
    """{relative path: (bytes, mtime_ns)} of every file under D."""
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(d.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def tools():
    try:
        return get_tools()
    except FileNotFoundError as e:
        pytest.fail(str(e))


@pytest.fixture(params=["root", "user"])
def jup(request, tools):
    try:
        j = make_jupyter(request.param, tools, request.node.name)
    except LookupError as e:
        pytest.skip(str(e))
    yield j
    j.close()
