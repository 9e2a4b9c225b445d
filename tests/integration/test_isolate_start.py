"""isolate without a pty and without -v does not wait for the program's exec: it reads the
set-up report only after the sandbox's init has exited (apply/sandbox.hpp, spawn_sandbox).
A failure must still be one clear line with its own exit status, exactly as when it waits."""
from __future__ import annotations

import pytest

# (arguments, exit status): a step of the init, the program's exec (not found, not executable).
FAILURES = [
    (["--chdir", "/nonexistent-dir", "--", "true"], 125),
    (["--", "/no/such/program"], 127),
    (["--", "no-such-program-here"], 127),
    (["--", "/etc/hostname"], 126),
]


@pytest.mark.parametrize("args,status", FAILURES, ids=["chdir", "abs-missing", "path-missing", "not-executable"])
def test_setup_failure_reported_after_the_end_as_when_waiting(sb, args, status):
    quiet = sb.run(*args)        # does not wait for the exec
    verbose = sb.run("-v", *args)  # -v waits (it prints the program's pid)
    assert quiet.returncode == status, quiet
    assert verbose.returncode == status, verbose
    lines = quiet.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("isolate: "), quiet
    assert lines[0] in verbose.stderr.splitlines(), (quiet, verbose)


def test_program_status_and_output_unchanged(sb):
    r = sb.sh("echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n"), r
