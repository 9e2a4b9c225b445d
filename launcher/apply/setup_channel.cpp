#include "apply/setup_channel.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace ik {
namespace {
void copy_field(char* dst, size_t n, const std::string& s) {
  std::strncpy(dst, s.c_str(), n - 1);
  dst[n - 1] = '\0';
}
}  // namespace

void send_setup_failure(int fd, const Error& e) {
  SetupFailure r{};
  r.exit_code = e.exit_code;
  r.err = e.err;
  copy_field(r.step, sizeof r.step, e.step);
  copy_field(r.message, sizeof r.message, e.message);
  copy_field(r.hint, sizeof r.hint, e.hint);
  ssize_t n;
  do n = write(fd, &r, sizeof r);
  while (n < 0 && errno == EINTR);
}

Result<bool> receive_setup_failure(int fd, Error& out) {
  SetupFailure r{};
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

Status send_fds(int sock, const int* fds, size_t n_fds) {
  constexpr size_t kMaxFds = 4;
  if (n_fds == 0 || n_fds > kMaxFds) return sys_error("send descriptors", EINVAL);
  char byte = 'r';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFds * sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(n_fds * sizeof(int));
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
  std::memcpy(CMSG_DATA(c), fds, n_fds * sizeof(int));
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n != 1) return sys_error("send the sandbox's root to the launcher");
  return ok();
}

Status send_fd(int sock, int fd) { return send_fds(sock, &fd, 1); }

Result<UniqueFd> receive_fd(int sock) {
  const char* step = "receive the sandbox's root from its init";
  char byte;
  iovec iov{&byte, 1};
  // Room for a few descriptors, so that extra ones are received (and closed
  // below) instead of truncating the control data.
  alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  // MSG_CMSG_CLOEXEC: the descriptor is close-on-exec from the moment it lands.
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return sys_error(step);
  UniqueFd got;
  int count = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t fds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < fds; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      ++count;
      if (!got.valid()) got.reset(fd);
      else close(fd);
    }
  }
  if (n == 0 && count == 0) return sys_error(step, EPIPE);
  if (count != 1 || (msg.msg_flags & MSG_CTRUNC)) return sys_error(step, EPROTO);
  return got;
}

}  // namespace ik
