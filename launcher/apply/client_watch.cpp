#include "apply/client_watch.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "apply/monitor.hpp"
#include "common/log.hpp"

namespace ik {

pid_t parent_of(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return -1;
  char buf[1024];
  const ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return -1;
  buf[n] = '\0';
  // "pid (comm) state ppid ...": comm may hold spaces and ')', so from the last ')'.
  const char* close = std::strrchr(buf, ')');
  if (!close) return -1;
  char state = 0;
  int ppid = -1;
  if (std::sscanf(close + 1, " %c %d", &state, &ppid) != 2) return -1;
  return ppid;
}

bool is_ancestor(pid_t pid) {
  if (pid <= 1) return false;
  // Bounded: a chain of processes is short, and a loop (pid reuse while we
  // read) must not hang the start.
  pid_t p = ::getppid();
  for (int depth = 0; depth < 256 && p > 1; ++depth) {
    if (p == pid) return true;
    p = parent_of(p);
  }
  return false;
}

pid_t client_pid(const char* jpy_parent_pid, pid_t parent_at_start, bool ancestors_only) {
  if (!jpy_parent_pid || !*jpy_parent_pid) return parent_at_start;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(jpy_parent_pid, &end, 10);
  // "1" (or junk) names no real client: a kernel started under a PID-1
  // init sees that, and we set it so ourselves for the sandboxed kernel.
  if (errno != 0 || !end || *end != '\0' || v <= 1 || v > 0x3fffffff) {
    if (v != 1) log::step("client watch: JPY_PARENT_PID='%s' is not a pid: ignored", jpy_parent_pid);
    return parent_at_start;
  }
  const auto pid = static_cast<pid_t>(v);
  if (!ancestors_only || pid == parent_at_start || is_ancestor(pid)) return pid;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return pid;  // gone: ClientWatch says so
  log::step("client watch: JPY_PARENT_PID=%d is not an ancestor of the launcher: ignored, the parent (%d) is the "
            "client",
            static_cast<int>(pid), static_cast<int>(parent_at_start));
  return parent_at_start;
}

ClientWatch ClientWatch::open(const char* jpy_parent_pid, pid_t parent_at_start, bool ancestors_only) {
  ClientWatch w;
  w.pid_ = client_pid(jpy_parent_pid, parent_at_start, ancestors_only);
  if (w.pid_ <= 1) {
    log::step("client watch: no client process to watch (parent is %d)", static_cast<int>(parent_at_start));
    return w;
  }
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, w.pid_, 0));
  if (fd < 0) {
    if (errno == ESRCH) w.gone_at_start_ = true;
    else
      log::step("client watch: pidfd_open(%d): %s; not watching the client", static_cast<int>(w.pid_),
                std::strerror(errno));
    return w;
  }
  w.pidfd_.reset(fd);
  // The parent may have died between the start and pidfd_open, and its pid
  // been reused: then we were reparented, and getppid() says so. Checked
  // after pidfd_open, so a death after this point shows on the pidfd.
  if (w.pid_ == parent_at_start && ::getppid() != parent_at_start) w.gone_at_start_ = true;
  // Likewise an ancestor named by JPY_PARENT_PID that died since
  // client_pid() looked: the pidfd may be of a new process with its pid.
  if (ancestors_only && w.pid_ != parent_at_start && !is_ancestor(w.pid_)) w.gone_at_start_ = true;
  w.grace_timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  log::step("client watch: watching pid %d (%s)", static_cast<int>(w.pid_),
            w.pid_ == parent_at_start ? "the parent" : "JPY_PARENT_PID");
  return w;
}

std::vector<int> ClientWatch::fds() const {
  std::vector<int> out;
  if (pidfd_.valid()) out.push_back(pidfd_.get());
  if (grace_timer_.valid()) out.push_back(grace_timer_.get());
  return out;
}

bool ClientWatch::on_ready(int fd, const SandboxProcess& sandbox) {
  if (grace_timer_.valid() && fd == grace_timer_.get()) {
    std::uint64_t n;
    if (::read(fd, &n, sizeof n) == sizeof n) {
      log::step("client watch: the kernel outlived the %ld ms grace: killing the sandbox", kGraceMs);
      sandbox.signal(SIGKILL);  // takes the whole pid namespace with it
    }
    return true;
  }
  if (!pidfd_.valid() || fd != pidfd_.get()) return false;
  pidfd_.reset();
  if (stopping_) return true;
  stopping_ = true;
  log::warn("client process %d is gone: stopping the kernel", static_cast<int>(pid_));
  // SIGTERM first: ipykernel keeps its default action, so even a busy
  // kernel ends at once; a program that ignores it is killed after the grace.
  sandbox.signal_program(SIGTERM);
  itimerspec its{};
  its.it_value.tv_sec = kGraceMs / 1000;
  its.it_value.tv_nsec = (kGraceMs % 1000) * 1'000'000;
  if (!grace_timer_.valid() || ::timerfd_settime(grace_timer_.get(), 0, &its, nullptr) != 0) sandbox.signal(SIGKILL);
  return true;
}

}  // namespace ik
