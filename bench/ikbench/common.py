"""Constants and helpers every part of the bench shares (bench/soak too)."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent.parent
PYTHON = "/usr/bin/python3"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def default_build_dir() -> Path:
    return Path(os.environ.get("IK_BUILD_DIR", str(REPO / "build")))


def require_programs(build_dir: Path, names, prog: str) -> dict[str, Path]:
    """The named programs of build_dir, checked before anything is created:
    a missing one ends the run with one line saying how to fix it."""
    paths = {}
    for name in names:
        src = build_dir / name
        if not os.access(src, os.X_OK):
            sys.exit(f"{prog}: {src} is missing; build first (cmake --build build) or set IK_BUILD_DIR")
        paths[name] = src
    return paths


def copy_programs(paths: dict[str, Path], dest: Path) -> dict[str, dict]:
    """Copies the programs into dest, so that a rebuild during the run cannot
    change them mid-run; returns what was copied (source, hash, mtime)."""
    info = {}
    for name, src in paths.items():
        shutil.copy2(src, dest / name)
        h = hashlib.sha256((dest / name).read_bytes()).hexdigest()[:16]
        info[name] = {"path": str(src), "sha256_16": h,
                      "mtime": dt.datetime.fromtimestamp(src.stat().st_mtime).isoformat(timespec="seconds")}
    return info
