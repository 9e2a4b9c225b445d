"""The program holds no controlling terminal, whatever the syscall filter
does (issue 10, item 5).

The program leaves the caller's terminal with TIOCNOTTY and a process group
of its own instead of setsid(), which would also start a new scheduler
autogroup (apply/session.cpp; the cost is in bench/analysis.md). These
probes run with --seccomp off, so that only the missing controlling terminal
can stop TIOCSTI, and with the caller's pty as the controlling terminal, like
a shell session. test_syscalls.py checks the same with the filter on.
"""

from __future__ import annotations

import pytest

CTTY_PROBE = r'''
import termios
c = ctypes.c_char(b"x")
res = {"isatty0": os.isatty(0),
       "tty_open": attempt(lambda: os.close(os.open("/dev/tty", os.O_RDWR))),
       "group_leader": os.getpgrp() == os.getpid(),
       "tiocsti": sc("ioctl", 0, termios.TIOCSTI, ctypes.byref(c)),
       "tiocsctty": sc("ioctl", 0, termios.TIOCSCTTY, 1),
       "tiocspgrp": sc("ioctl", 0, termios.TIOCSPGRP, ctypes.byref(ctypes.c_int(os.getpgrp())))}
emit(res)
'''


def test_no_controlling_terminal_even_without_the_filter(runner):
    """With the caller's pty as controlling terminal and no seccomp filter: /dev/tty does not open (ENXIO),
    TIOCSTI, TIOCSCTTY (steal it back) and TIOCSPGRP (take the foreground) on the inherited terminal fail,
    nothing reaches the pty's input queue; the program leads its own process group (the launcher's
    signals go to that group)."""
    if runner.kind == "kernel":
        pytest.skip("the kernel's stdin is not the caller's terminal")
    r = runner.probe(CTTY_PROBE, opts=["--seccomp", "off"], pty=True)
    assert r["isatty0"] is True, r
    assert r["tty_open"] == ["err", "ENXIO"], r
    assert r["group_leader"] is True, r
    assert r["tiocsti"] == [-1, "EPERM"], r
    assert r["tiocsctty"] == [-1, "EPERM"], r
    assert r["tiocspgrp"] == [-1, "ENOTTY"], r
    assert r.pty_pending == {"pending": 0, "data": ""}, r
