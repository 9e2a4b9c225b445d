#include "apply/report.hpp"

#include <unistd.h>

#include <cstring>

namespace ik {
namespace {
void copy_field(char* dst, size_t n, const std::string& s) {
  std::strncpy(dst, s.c_str(), n - 1);
  dst[n - 1] = '\0';
}
}  // namespace

void send_report(int fd, const Error& e) {
  Report r{};
  r.exit_code = e.exit_code;
  r.err = e.err;
  copy_field(r.step, sizeof r.step, e.step);
  copy_field(r.message, sizeof r.message, e.message);
  copy_field(r.hint, sizeof r.hint, e.hint);
  ssize_t n;
  do n = write(fd, &r, sizeof r);
  while (n < 0 && errno == EINTR);
}

Result<bool> receive_report(int fd, Error& out) {
  Report r{};
  size_t got = 0;
  while (got < sizeof r) {
    ssize_t n = read(fd, reinterpret_cast<char*>(&r) + got, sizeof r - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("read the sandbox's set-up report");
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got == 0) return false;  // EOF: exec succeeded
  if (got != sizeof r) return sys_error("read the sandbox's set-up report", EPROTO);
  out = Error{r.step, r.err, r.message, r.hint, r.exit_code};
  return true;
}

}  // namespace ik
