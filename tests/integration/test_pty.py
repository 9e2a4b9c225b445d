"""`isolate` on a terminal: the program gets a pseudo-terminal of the
sandbox's own devpts (job control, tty, Ctrl-C/Z/\\, window size, full-screen
programs), the caller's terminal modes come back on every way out, and the
program cannot reach the caller's terminal.

Each test drives a real terminal with pexpect: a small bash wrapper runs in
it as root, records `stty -g` of the terminal, starts isolate (as root or,
through setpriv, as the test user; like login(1) the wrapper first gives
that user the terminal), prints isolate's exit status and records `stty -g`
again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import termios
import time
from pathlib import Path

import pexpect
import pytest

from kit.common import wait_until

PROMPT = r"PROMPT> "
WRAPPER = r"""
state=$1; owner=$2; shift 2
if [ -n "$PRE_STTY" ]; then stty $PRE_STTY; fi
stty -g > "$state/before"
if [ -n "$owner" ]; then chown "$owner" "$(tty)" || exit 99; fi
echo WRAPPER-START
if [ -n "$OUT_FILE" ]; then "$@" > "$OUT_FILE"
elif [ -n "$BACKGROUND" ]; then set -m; "$@" & wait $!
else "$@"; fi
echo "ISOLATE-EXIT=$?"
stty -g > "$state/after"
# Whatever reached this terminal's input while isolate ran (TIOCSTI from
# inside would land here) is read now, with the terminal cooked again.
IFS= read -r -t 1 leftover
echo "LEFTOVER[$leftover]"
"""


class Term:
    """isolate ARGS in a pexpect-driven terminal, through the wrapper."""

    def __init__(self, sb, tmp_path: Path, *args, rows=24, cols=80, give_tty=True, env=None):
        self.sb = sb
        self.state = tmp_path
        self.wrapper = tmp_path / "wrapper.sh"
        self.wrapper.write_text(WRAPPER)
        owner = sb.user if (sb.mode == "user" and give_tty) else ""
        e = sb.env({"TERM": "xterm", "SHELL": "/bin/bash", **(env or {})})
        self.child = pexpect.spawn("/bin/bash", ["--norc", "--noprofile", str(self.wrapper), str(tmp_path), owner,
                                                 *sb.argv(args)],
                                   env=e, cwd=str(sb.workdir), encoding="utf-8", codec_errors="replace",
                                   timeout=20, dimensions=(rows, cols))
        self.expect("WRAPPER-START")

    def expect(self, pattern, timeout=20):
        try:
            return self.child.expect(pattern, timeout=timeout)
        except (pexpect.TIMEOUT, pexpect.EOF) as e:
            raise AssertionError(f"expected {pattern!r}; got so far:\n{self.child.before!r}") from e

    def isolate_pid(self) -> int:
        # The wrapper starts it right after printing WRAPPER-START.
        kids = wait_until(lambda: children(self.child.pid), 10)
        assert kids and len(kids) == 1, kids
        return kids[0]

    def finish(self, timeout=20) -> int:
        """Waits for isolate to exit; returns its status, checks the modes."""
        self.expect(r"ISOLATE-EXIT=(\d+)", timeout)
        self.output = self.child.before
        status = int(self.child.match.group(1))
        self.expect(r"LEFTOVER\[(.*)\]", 5)
        self.leftover = self.child.match.group(1)
        self.child.expect(pexpect.EOF, timeout=10)
        self.child.close()
        before = (self.state / "before").read_text()
        after = (self.state / "after").read_text()
        assert after == before, f"terminal modes not restored:\nbefore {before}after  {after}"
        assert self.leftover == "", f"something reached the caller's terminal: {self.leftover!r}"
        return status

    def close(self):
        if self.child.isalive():
            for pid in reversed(descendants(self.child.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.child.close(force=True)


@pytest.fixture
def term(sb, tmp_path):
    opened = []

    def start(*args, **kw):
        t = Term(sb, tmp_path, *args, **kw)
        opened.append(t)
        return t

    yield start
    for t in opened:
        t.close()


def children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    out = []
    for c in children(pid):
        out.append(c)
        out += descendants(c)
    return out


def sandbox_pids(t: Term) -> tuple[int, int, int]:
    """(isolate, the sandbox's init, the program) host pids."""
    iso = t.isolate_pid()
    init = wait_until(lambda: children(iso), 10)
    assert init and len(init) == 1, init
    prog = wait_until(lambda: children(init[0]), 10)
    assert prog, "no program under the init"
    return iso, init[0], prog[0]


def bash(t_start, *extra, **kw) -> Term:
    t = t_start(*extra, f"--setenv=PS1={PROMPT}", "--", "bash", "--norc", "--noprofile", "-i", **kw)
    t.expect(PROMPT)
    return t


def run_cmd(t: Term, cmd: str, until: str) -> tuple:
    """Runs cmd in the sandbox's shell; the groups of `until` in its output."""
    t.child.sendline(cmd)
    t.expect(until)
    groups = t.child.match.groups()
    t.expect(PROMPT)
    return groups


ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\([A-Z0-9]|[=>])")


# ------------------------------------------------------------- the terminal


def test_program_has_a_terminal_of_the_sandboxs_devpts(sb, term):
    t = bash(term)
    assert "no job control" not in t.child.before, t.child.before
    (name,) = run_cmd(t, "tty", r"(/dev/pts/\d+|not a tty)")
    assert re.fullmatch(r"/dev/pts/\d+", name), name
    # Only the program's own pty is in its /dev/pts: none of the host's.
    (pts,) = run_cmd(t, "echo PTS''"": $(ls /dev/pts | sort | tr '\\n' ' ')", r"PTS: ([^\r\n]*)")
    assert pts.split() == ["0", "ptmx"], pts
    # stdin, stdout, stderr are the sandbox's pty (the caller's stderr, a
    # terminal, goes to it too).
    (fds,) = run_cmd(t, "echo FDS''"": $(readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2)", r"FDS: ([^\r\n]*)")
    assert fds.split() == ["/dev/pts/0"] * 3, fds
    t.child.sendline("exit 3")
    assert t.finish() == 3


def test_no_descriptor_of_the_callers_terminal_inside(sb, term):
    t = bash(term)
    caller = os.stat(f"/proc/{t.child.pid}/fd/0")
    host_devpts = os.stat("/dev/pts").st_dev
    _, init, prog = sandbox_pids(t)
    for pid, who in ((init, "init"), (prog, "program")):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if not stat.S_ISCHR(st.st_mode):
                continue
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            assert st.st_rdev != caller.st_rdev or st.st_dev != caller.st_dev, \
                f"the {who} holds the caller's terminal as fd {fd} ({target})"
            assert st.st_dev != host_devpts, f"the {who} holds a host pty as fd {fd} ({target})"
    # The program's fds 0-2 are the sandbox's pty, not /dev/null.
    st = os.stat(f"/proc/{prog}/fd/0")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) >= 136, os.readlink(f"/proc/{prog}/fd/0")
    t.child.sendline("exit")
    assert t.finish() == 0


def test_job_control_ctrl_z_fg_ctrl_c(sb, term):
    t = bash(term)
    t.child.sendline("sleep 100")
    t.expect("sleep 100")
    time.sleep(0.3)  # bash has given the terminal to the job
    t.child.sendcontrol("z")
    t.expect(r"Stopped\s+sleep 100")
    t.expect(PROMPT)
    run_cmd(t, "jobs", r"\[1\]\+\s+Stopped\s+sleep 100")
    t.child.sendline("fg")
    t.expect("sleep 100")
    time.sleep(0.3)
    t.child.sendcontrol("c")
    t.expect(PROMPT)
    assert run_cmd(t, "echo STATUS=$?", r"STATUS=(\d+)") == ("130",)
    # Ctrl-\: SIGQUIT to the foreground job, not to bash.
    t.child.sendline("sleep 100")
    t.expect("sleep 100")
    time.sleep(0.3)
    t.child.sendcontrol("\\")
    t.expect("Quit")
    t.expect(PROMPT)
    assert run_cmd(t, "echo STATUS=$?", r"STATUS=(\d+)") == ("131",)
    t.child.sendline("exit 7")
    assert t.finish() == 7


def test_ctrl_c_reaches_a_plain_program_once(sb, term):
    script = 'n=0; trap "n=\\$((n+1))" INT; echo READY; sleep 1 & wait; sleep 1 & wait; exit $((40+n))'
    t = term("--", "bash", "-c", script)
    t.expect("READY")
    t.child.sendcontrol("c")
    assert t.finish() == 41


def test_window_size_at_start_and_on_resize(sb, term):
    t = bash(term, rows=30, cols=100)
    assert run_cmd(t, "stty size", r"(\d+) (\d+)") == ("30", "100")
    code = ("import os, signal, sys\n"
            # os.write: a handler may run inside print() of the main code.
            "signal.signal(signal.SIGWINCH, lambda *a: os.write(1, b'WINCH %d %d\\n' % os.get_terminal_size()))\n"
            "print('READY' + '-FOR-WINCH', flush=True)\n"
            "sys.stdin.readline()\n")
    t.child.sendline(f'/usr/bin/python3 -c "{code}"')
    t.expect("READY-FOR-WINCH")  # not in the echoed command line
    t.child.setwinsize(40, 132)
    t.expect(r"WINCH (\d+) (\d+)")
    assert t.child.match.groups() == ("132", "40")
    t.child.sendline("")
    t.expect(PROMPT)
    assert run_cmd(t, "stty size", r"(\d+) (\d+)") == ("40", "132")
    t.child.sendline("exit")
    assert t.finish() == 0


def test_all_output_arrives_also_what_was_written_just_before_exit(sb, term):
    # 50000 lines, the program exits right after the last: isolate drains
    # the master after the sandbox is gone, losing and reordering nothing.
    t = term("--", "sh", "-c", "seq 1 50000; exit 3")
    assert t.finish(timeout=60) == 3
    lines = t.output.strip().split("\r\n")
    assert lines == [str(i) for i in range(1, 50001)], (len(lines), lines[:3], lines[-3:])


def test_caller_terminal_modes_are_copied(sb, term):
    # Like script(1) and ssh: the new terminal starts with the caller's
    # modes; here erase is ^H instead of the devpts default ^?.
    t = term("--", "sh", "-c", "stty -a | tr ';' '\\n' | grep -w erase", env={"PRE_STTY": "erase ^H"})
    t.expect(r"erase = (\S+)")
    assert t.child.match.group(1) == "^H"
    assert t.finish() == 0


def test_full_screen_programs_draw(sb, term):
    sb.write("notes.txt", "".join(f"line {i}\n" for i in range(200)))
    t = term("--", "vi", "-u", "NONE", "-N", "notes.txt")
    t.expect("line 0")
    t.expect(r"line 2\d")      # a screenful, not just the first line
    t.child.send("Gdd")         # to the end; delete a line
    t.child.send(":wq\r")
    assert t.finish() == 0
    lines = (sb.workdir / "notes.txt").read_text().splitlines()
    assert lines[-1] == "line 198" and len(lines) == 199


def test_top_draws_and_sees_only_the_sandbox(sb, term):
    t = term("--", "top", "-n", "1")
    assert t.finish() == 0
    screen = ANSI.sub("", t.output)
    m = re.search(r"Tasks:\s*(\d+)\s*total", screen)
    assert m and int(m.group(1)) == 2, screen   # the init and top
    assert re.search(r"\n\s*[2-9]\d* \S+ .* top\s", screen), screen   # its pid may vary (set-up thread)


# ------------------------------------------------------------- restoring


def test_modes_restored_after_program_is_sigkilled(sb, term):
    t = bash(term)
    _, _, prog = sandbox_pids(t)
    os.kill(prog, signal.SIGKILL)
    assert t.finish() == 128 + signal.SIGKILL


def test_a_terminal_that_stops_reading_does_not_hold_isolate(sb, term):
    # A flood fills the caller's terminal, whose reader (pexpect, which reads
    # only in expect) has stopped. Once the program is gone, isolate gives
    # what it still holds 2 s to go out, then drops it, ends and puts the
    # modes back anyway.
    t = term("--", "yes", "flood")
    iso, _, prog = sandbox_pids(t)
    time.sleep(1.0)  # the terminal, isolate's buffer and the program's pty fill up
    os.kill(prog, signal.SIGKILL)
    killed = time.monotonic()
    assert wait_until(lambda: iso not in children(t.child.pid), 15), "isolate still waits for the terminal"
    took = time.monotonic() - killed
    assert took < 2 + 3, f"isolate took {took:.1f}s to give up on the terminal (bound 2 s)"
    assert t.finish() == 128 + signal.SIGKILL


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_modes_restored_after_signal_to_isolate(sb, term, sig):
    t = term("--", "sleep", "100")
    iso, _, _ = sandbox_pids(t)
    os.kill(iso, sig)
    assert t.finish() == 128 + sig


def test_modes_restored_after_wall_time(sb, term):
    t = term("--wall-time", "1", "--", "sleep", "100")
    t.expect("wall-time limit")
    assert t.finish() == 128 + signal.SIGKILL


@pytest.mark.parametrize("args, status", [
    (["--", "no-such-program-xyz"], 127),
    (["--chdir", "/no/such/dir", "--", "true"], 125),
    (["--pty", "--no-pty", "--", "true"], 2),
])
def test_modes_restored_after_errors(sb, term, args, status):
    t = term(*args)
    assert t.finish() == status


def test_stopping_isolate_gives_the_terminal_back(sb, term):
    # kill -TSTP isolate (like ssh's ~^Z): the caller's modes while it is
    # stopped, raw again once continued, and the session goes on. (Termios
    # calls on pexpect's master act on the caller's terminal, its slave.)
    t = bash(term)
    iso, _, _ = sandbox_pids(t)
    raw = termios.tcgetattr(t.child.child_fd)
    assert not raw[3] & termios.ICANON
    os.kill(iso, signal.SIGTSTP)
    assert wait_until(lambda: open(f"/proc/{iso}/stat").read().split(") ")[1][0] == "T", 10)
    stopped = termios.tcgetattr(t.child.child_fd)
    assert stopped[3] & termios.ICANON and stopped[3] & termios.ECHO, stopped
    os.kill(iso, signal.SIGCONT)
    assert wait_until(lambda: not termios.tcgetattr(t.child.child_fd)[3] & termios.ICANON, 10)
    assert run_cmd(t, "echo $((6*7))", r"(42)") == ("42",)
    t.child.sendline("exit")
    assert t.finish() == 0


def test_terminal_not_owned_by_the_user(sb, term):
    # The terminal cannot be reopened non-blocking (user mode: root owns
    # it); isolate falls back to writing the one it was given.
    t = bash(term, give_tty=False)
    run_cmd(t, "seq 2000 | tail -1", "2000")
    t.child.sendline("exit 4")
    assert t.finish() == 4


# ------------------------------------------------------------- security


def test_tiocsti_denied(sb, term):
    code = ("import fcntl, termios, sys\n"
            "for fd in (0, 1, 2, open('/dev/tty', 'rb').fileno()):\n"
            "    try:\n"
            "        fcntl.ioctl(fd, termios.TIOCSTI, b'x')\n"
            "        print('INJECTED', fd)\n"
            "    except OSError as e:\n"
            "        print('REFUSED', fd, e.errno)\n")
    t = term("--", "/usr/bin/python3", "-c", code)
    for _ in range(4):
        t.expect(r"(INJECTED|REFUSED) \d+ ?(\d*)")
        assert t.child.match.group(1) == "REFUSED" and t.child.match.group(2) == "1", t.child.match.group(0)
    assert t.finish() == 0


def test_tiocsti_without_seccomp_only_reaches_the_sandboxs_own_terminal(sb, term):
    # With the filter off the ioctl works, but the keys go into the
    # program's own pty, where it reads them back; the caller's terminal
    # (the wrapper reads it after isolate exits: LEFTOVER) gets nothing.
    code = ("import fcntl, termios, sys\n"
            "for c in b'echo PWNED\\n':\n"
            "    fcntl.ioctl(0, termios.TIOCSTI, bytes([c]))\n"
            "print('READBACK', sys.stdin.readline().strip(), flush=True)\n")
    t = term("--seccomp=off", "--", "/usr/bin/python3", "-c", code)
    t.expect(r"READBACK ([^\r\n]*)")
    assert t.child.match.group(1) == "echo PWNED"
    assert t.finish() == 0   # checks LEFTOVER[] is empty


# ------------------------------------------------------------- without a pty


def test_no_pty_keeps_the_old_behaviour(sb, term):
    t = term("--no-pty", "--", "sh", "-c", "tty; exit 5")
    t.expect(r"not a tty")
    assert t.finish() == 5


def test_stdout_redirected_gives_no_pty(sb, term):
    # A pty would turn "\n" into "\r\n" in the file, and take stderr too.
    out = sb.workdir / "out.txt"
    t = term("--", "sh", "-c", "printf 'a\\nb\\n'; echo to-stderr >&2", env={"OUT_FILE": str(out)})
    t.expect("to-stderr")
    assert t.finish() == 0
    assert out.read_text() == "a\nb\n"
    plan = sb.workdir / "plan.json"
    t = Term(sb, t.state, "--print-plan", env={"OUT_FILE": str(plan)})
    assert t.finish() == 0
    assert json.loads(plan.read_text())["terminal"] == {"mode": "inherit", "why": "stdout is not a terminal"}


def test_started_in_the_background_gives_no_pty(sb, term):
    # `isolate cmd &` from a shell with job control: raw mode would stop it
    # (SIGTTOU); it runs as without a terminal instead.
    t = term("--", "sh", "-c", "echo BG-RAN; exit 5", env={"BACKGROUND": "1"})
    t.expect("BG-RAN")
    assert t.finish() == 5
    t = Term(sb, t.state, "--print-plan", env={"BACKGROUND": "1"})
    t.expect(r'"terminal": \{[^}]*"why": "([^"]*)"')
    assert t.child.match.group(1) == "isolate is in the background of its terminal"
    assert t.finish() == 0


def test_print_plan_records_the_terminal(sb):
    r = sb.run("--print-plan", input="")
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["terminal"] == {"mode": "inherit", "why": "stdin is not a terminal"}
    r = sb.run("--pty", "--print-plan", input="")
    assert json.loads(r.stdout)["terminal"] == {"mode": "pty", "stderr": "inherit", "why": "--pty"}
    r = sb.run("--pty", "--no-pty", "--print-plan")
    assert r.returncode == 2 and "--pty and --no-pty" in r.stderr, r


def test_stdin_not_a_terminal_keeps_the_old_behaviour(sb):
    r = sb.run("--", "sh", "-c", "tty; echo err >&2; exit 3", input="")
    assert r.returncode == 3, r
    assert r.stdout == "not a tty\n" and r.stderr == "err\n", r


def test_forced_pty_without_a_terminal(sb):
    # --pty with pipes (like ssh -tt): the program has a terminal; its
    # output comes through it (\r\n); a redirected stderr stays apart.
    r = subprocess.run(sb.argv(["--pty", "--", "sh", "-c", "tty; echo err >&2; exit 3"]), input=b"",
                       capture_output=True, env=sb.env(), cwd=sb.workdir, timeout=30)
    assert r.returncode == 3, r
    assert r.stdout == b"/dev/pts/0\r\n" and r.stderr == b"err\n", r
    # Input from a pipe ends with the terminal's end-of-file key.
    r = sb.run("--pty", "--", "sh", "-c", "cat; echo CAT-DONE", input="hello\n")
    assert r.returncode == 0, r
    assert "CAT-DONE" in r.stdout and "hello" in r.stdout, r
