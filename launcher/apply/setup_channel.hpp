// The set-up channel, child -> parent (not to be confused with
// common/print_error, which prints for the user). The child writes one
// fixed-size SetupFailure on a close-on-exec pipe when a step fails; EOF
// without one means the program was exec'd. Fixed size < PIPE_BUF, so the
// write is atomic.
#pragma once
#include "common/error.hpp"
#include "common/fd.hpp"

namespace ik {

struct SetupFailure {
  int exit_code;
  int err;
  char step[512];
  char message[1024];
  char hint[1024];
};
static_assert(sizeof(SetupFailure) < 4096, "a SetupFailure must fit one atomic pipe write");

// In the child: writes `e` to `fd` (async-signal-safe enough for after fork).
void send_setup_failure(int fd, const Error& e);
// In the parent: reads until EOF. Returns an Error if the child sent one.
Result<bool> receive_setup_failure(int fd, Error& out);

// The child also hands the parent a descriptor (the sandbox's root) over a
// unix socket, as SCM_RIGHTS with one payload byte. In the child:
Status send_fd(int sock, int fd);
// The same for n descriptors in one message (receive_fd refuses n != 1).
Status send_fds(int sock, const int* fds, size_t n);
// In the parent: the descriptor, close-on-exec; an error on EOF (the child
// died before sending) or on anything but exactly one descriptor.
Result<UniqueFd> receive_fd(int sock);

}  // namespace ik
