// The program is the sandbox's process 2 (as under bubblewrap), whatever
// set-up did before: the network namespace may be made on a thread of the
// init (apply/network.cpp, only with an idle CPU), and a thread takes a pid
// of the namespace too, so the program would be 3 on a quiet machine and 2
// on a busy one. A pooled kernel must look like a cold one, and a pid that
// depends on the load is a detail nobody should have to explain.
#pragma once
#include <string>

namespace ik {

// First thing in the init, before any thread: moves the namespace's next pid
// far up (1001), so the tasks set-up makes (the network thread) never hold
// pid 2. Joining a thread does not free its pid: the kernel wakes the joiner
// (clear_child_tid) before it releases the task, so a pid 2 still held at
// the program's clone made it 3 (seen once in a few hundred starts). Writes
// the host's /proc/sys/kernel/ns_last_pid, which sets the *writer's* pid
// namespace (the handler uses the caller's, not the procfs's), and keeps the
// descriptor for next_pid_is_two(). Best effort: a read-only /proc/sys (some
// containers) leaves it to keep_ns_last_pid.
void move_setup_pids_up();

// Opens PROC_DIR/sys/kernel/ns_last_pid of the fresh procfs, before its
// sys/ goes read-only (an open descriptor stays writable), unless
// move_setup_pids_up() already holds one. No-op where the kernel lacks it
// (CONFIG_CHECKPOINT_RESTORE).
void keep_ns_last_pid(const std::string& proc_dir);

// Sets the namespace's last pid to 1, so the next process is 2, and closes
// the descriptor. Needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE) over the
// pid namespace's user namespace: the init's, before it drops its
// capabilities; and nothing else may start a task between this and the
// program's clone. Best effort: the pid is a nicety, not a guarantee.
void next_pid_is_two();

}  // namespace ik
