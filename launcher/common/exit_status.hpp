// Exit status convention of shells, used by the init, the host side and
// `isolated-kernel`'s subprocesses alike.
#pragma once

namespace ik {

// A waitpid() status as a shell reports it: the exit code, or 128+signal.
int exit_status_from_wait(int wait_status);

}  // namespace ik
