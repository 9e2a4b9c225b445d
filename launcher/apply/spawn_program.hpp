// Starting the program from the sandbox's init: a vfork-like clone, so that
// the init's address space (a copy of the launcher's) is neither copied
// (page tables, copy-on-write faults) nor torn down again by the execve.
#pragma once
#include <sys/types.h>

namespace ik {

// Runs `fn(arg)` in a new process that shares our memory until it execs or
// exits; we are suspended until then (CLONE_VM | CLONE_VFORK, like
// posix_spawn). `fn` must end in execve or _exit, never return into our
// frames. Signal handlers, the signal mask, cwd, rlimits and the session
// are its own (no CLONE_SIGHAND, CLONE_FS, CLONE_THREAD). Returns the pid,
// or -1 with errno. Sanitizer builds fork() instead (ASan's shadow state
// does not follow a shared-memory child).
pid_t spawn_sharing_memory(int (*fn)(void*), void* arg);

}  // namespace ik
