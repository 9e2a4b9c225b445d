#include "apply/file_copy.hpp"

#include <fcntl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/fd.hpp"
#include "common/file_io.hpp"

namespace ik {

Status copy_file_into(const std::string& from, int to_fd, const std::string& shown_as) {
  const std::string step = "copy " + shown_as;
  // O_NOFOLLOW: the planner resolved the path, so a symlink here was put there
  // since. O_NONBLOCK: a FIFO put there must not hang set-up (regular files
  // ignore it).
  UniqueFd fd(::open(from.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK));
  if (!fd.valid()) return sys_error(step);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_error(step);
  if (!S_ISREG(st.st_mode)) return Error{step, 0, "not a regular file any more (changed on the host during set-up)"};
  if (st.st_size > static_cast<off_t>(kSmallFileMax))
    return Error{step, 0, "grew past 1 MiB on the host during set-up"};
  // st_size bytes: the file as it was when opened.
  size_t left = static_cast<size_t>(st.st_size);
  while (left > 0) {
    ssize_t n = ::sendfile(to_fd, fd.get(), nullptr, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error(step);
    if (n == 0) return ok();  // shrank meanwhile
    left -= static_cast<size_t>(n);
  }
  return ok();
}

}  // namespace ik
