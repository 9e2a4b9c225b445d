// PID 1 of the sandbox: forwards signals to the program, reaps every
// orphan, and exits with the program's status (128+N when killed by N).
// When it exits the kernel kills whatever is left in the pid namespace.
#pragma once
#include <signal.h>
#include <sys/types.h>

namespace ik {

// Signals forwarded from outside to the program (exactly once each).
const sigset_t& forwarded_signals();

[[noreturn]] void run_init(pid_t program);

}  // namespace ik
