"""The run's private environment: copies of the programs, a temporary
directory (work, runtime, kernelspecs) and the Jupyter variables pointing
into it."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .common import PYTHON, copy_programs, require_programs


PROGRAMS = ("isolate", "isolated-kernel-launcher", "isolated-kernel")


def root_symlinks():
    """bubblewrap arguments recreating the host's /bin, /lib* symlinks into /usr."""
    out = []
    for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / d
        if p.is_symlink():
            out += ["--symlink", os.readlink(p), f"/{d}"]
    return out


class Env:
    def __init__(self, build_dir: Path, keep: bool, spec_hooks=()):
        """spec_hooks: callables env -> {variant: argv} adding kernelspecs
        (a section's `kernelspecs`), written after the three common ones."""
        programs = require_programs(build_dir, PROGRAMS, "bench/run")
        self.build_dir = build_dir
        self.tmp = Path(tempfile.mkdtemp(prefix="ikbench-"))
        self.keep = keep
        self.bin = self.tmp / "bin"
        self.bin.mkdir()
        self.binaries = copy_programs(programs, self.bin)
        self.isolate = str(self.bin / "isolate")
        self.launcher = str(self.bin / "isolated-kernel-launcher")
        self.work = self.tmp / "work"  # cwd of every sandbox and kernel: the "." mount
        self.work.mkdir()
        self.runtime = self.tmp / "runtime"
        self.runtime.mkdir(mode=0o700)
        self.jupyter = self.tmp / "jupyter"
        self.home = os.environ.get("HOME", "/root")
        os.environ["JUPYTER_PATH"] = str(self.jupyter)
        os.environ["JUPYTER_RUNTIME_DIR"] = str(self.runtime)
        os.environ["JUPYTER_DATA_DIR"] = str(self.tmp / "data")
        os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
        self.kernel_argv = {}
        self._write_kernelspecs(spec_hooks)

    def close(self):
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _write_kernelspecs(self, spec_hooks):
        """Kernelspec ikbench-VARIANT for each variant, in a JUPYTER_PATH of our own."""
        kern = [PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        bwrap = ["bwrap", "--ro-bind", "/usr", "/usr", *root_symlinks(), "--proc", "/proc", "--dev", "/dev",
                 "--tmpfs", "/tmp", "--tmpfs", self.home, "--bind", str(self.work), str(self.work),
                 "--bind", str(self.runtime), str(self.runtime), "--chdir", str(self.work),
                 "--unshare-all", "--share-net", "--die-with-parent",
                 # ipykernel polls its parent unless the parent is pid 1; under bwrap it is
                 # (bwrap's init), so it would shut down at once: drop the pid as isolate does
                 "--unsetenv", "JPY_PARENT_PID", "--", *kern]
        specs = {
            "plain": kern,
            "isolated": [self.launcher, "--", *kern],
            "bwrap": bwrap,
        }
        for hook in spec_hooks:
            specs.update(hook(self))
        for name, argv in specs.items():
            d = self.jupyter / "kernels" / f"ikbench-{name}"
            d.mkdir(parents=True)
            (d / "kernel.json").write_text(json.dumps(
                {"argv": argv, "display_name": f"ikbench {name}", "language": "python",
                 "interrupt_mode": "signal", "env": {}}, indent=1))
            self.kernel_argv[name] = argv
