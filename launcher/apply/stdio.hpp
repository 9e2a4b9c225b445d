// The program's stdin/stdout/stderr when they must not be the caller's own.
// A descriptor inherited into the sandbox is a way out of it: reopening
// /proc/self/fd/2 opens whatever the caller's stderr is (a server log file,
// a terminal) with fresh access rights, so the program could read or
// truncate a log or write escape sequences into a terminal. With
// ChildStdio the program gets /dev/null as stdin and pipes as stdout and
// stderr; the parent copies what comes out (StdioPump).
#pragma once
#include "common/error.hpp"
#include "common/fd.hpp"

namespace ik {

struct ChildStdio {
  // Created by the parent before the clone (the child inherits them).
  static Result<ChildStdio> create();

  // In the sandbox's init, once set-up is done and before the program is
  // forked: makes the pipes its fds 0/1/2 (the host's stdio is closed in
  // the init too, so no process inside holds it) and closes the rest.
  Status install_in_child();
  // In the parent right after the clone: only the child keeps the write ends.
  void close_child_ends();

  UniqueFd null_in;               // child's stdin: /dev/null, read-only
  UniqueFd out_write, err_write;  // child's stdout, stderr
  UniqueFd out_read, err_read;    // parent's ends, non-blocking
};

}  // namespace ik
