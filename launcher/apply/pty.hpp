// The program's pseudo-terminal, inside the sandbox (plan.terminal.pty).
// The init allocates it from the sandbox's own devpts instance (mounted
// newinstance by apply_dev), so the program's /dev/pts shows it and no pty
// of the host; the master goes to isolate, which copies between it and the
// caller's terminal (relay/terminal.*); the program makes the slave its
// controlling terminal. Nothing in the sandbox keeps a descriptor of the
// caller's terminal.
#pragma once
#include "common/error.hpp"
#include "common/fd.hpp"

namespace ik {

struct SandboxPty {
  UniqueFd master;
  UniqueFd slave;  // opened O_NOCTTY: it becomes the program's terminal, not the init's
};

// In the init, after pivot_root: a new pty from /dev/pts/ptmx, with the
// caller's terminal modes and window size when fd 0 (or 1) is a terminal.
Result<SandboxPty> open_sandbox_pty();

// In the program, after setsid(): the slave becomes its controlling
// terminal and its stdin, stdout (and stderr when `stderr_too`).
Status attach_to_pty(int slave, bool stderr_too);

// In the init once the program is forked: fds 0-2 become /dev/null, so the
// init holds no descriptor of the caller's terminal either.
void release_caller_stdio();

}  // namespace ik
