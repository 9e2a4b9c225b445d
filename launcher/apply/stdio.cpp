#include "apply/stdio.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace ik {
namespace {

// Keeps a new fd off 0/1/2: a launcher started with a closed stdin would get
// /dev/null or a pipe there, and install_in_child() would close it again.
Status above_stdio(UniqueFd& fd) {
  if (fd.get() > 2) return ok();
  int moved = fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return sys_error("fcntl(F_DUPFD_CLOEXEC)");
  fd.reset(moved);
  return ok();
}

Status make_pipe(UniqueFd& read_end, UniqueFd& write_end) {
  int p[2];
  // O_CLOEXEC on both: the write end becomes fd 1/2 by dup2 in the child,
  // which clears the flag on the copy only.
  if (pipe2(p, O_CLOEXEC) != 0) return sys_error("pipe for the program's output");
  read_end.reset(p[0]);
  write_end.reset(p[1]);
  IK_TRY(above_stdio(read_end));
  IK_TRY(above_stdio(write_end));
  // Non-blocking on our end only (the flag belongs to the open file
  // description, and the two ends of a pipe are two descriptions): the
  // program's writes block as on any pipe when we stop reading.
  if (fcntl(read_end.get(), F_SETFL, O_NONBLOCK) != 0) return sys_error("fcntl(O_NONBLOCK)");
  return ok();
}

}  // namespace

Result<ChildStdio> ChildStdio::create() {
  ChildStdio s;
  s.null_in.reset(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!s.null_in.valid()) return sys_error("open /dev/null");
  IK_TRY(above_stdio(s.null_in));
  IK_TRY(make_pipe(s.out_read, s.out_write));
  IK_TRY(make_pipe(s.err_read, s.err_write));
  return s;
}

Status ChildStdio::install_in_child() {
  out_read.reset();
  err_read.reset();
  // dup2 closes what was at 0/1/2 (the caller's stdio) and gives copies
  // without close-on-exec.
  if (dup2(null_in.get(), 0) < 0 || dup2(out_write.get(), 1) < 0 || dup2(err_write.get(), 2) < 0)
    return sys_error("dup2 the program's stdio");
  null_in.reset();
  out_write.reset();
  err_write.reset();
  return ok();
}

void ChildStdio::close_child_ends() {
  null_in.reset();
  out_write.reset();
  err_write.reset();
}

}  // namespace ik
