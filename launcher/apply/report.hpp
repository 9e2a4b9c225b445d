// Child -> parent error channel. The child writes one fixed-size Report on a
// close-on-exec pipe when a step fails; EOF without a report means the
// program was exec'd. Fixed size < PIPE_BUF, so the write is atomic.
#pragma once
#include "common/error.hpp"

namespace ik {

struct Report {
  int exit_code;
  int err;
  char step[512];
  char message[1024];
  char hint[1024];
};
static_assert(sizeof(Report) < 4096, "a Report must fit one atomic pipe write");

// In the child: writes `e` to `fd` (async-signal-safe enough for after fork).
void send_report(int fd, const Error& e);
// In the parent: reads until EOF. Returns an Error if the child sent one.
Result<bool> receive_report(int fd, Error& out);

}  // namespace ik
