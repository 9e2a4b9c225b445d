#include "apply/shutdown_watch.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "common/log.hpp"

namespace ik {

Result<ShutdownWatch> ShutdownWatch::create() {
  ShutdownWatch w;
  w.timer_.reset(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!w.timer_.valid()) return sys_error("timerfd_create (shutdown watch)");
  return w;
}

void ShutdownWatch::arm(pid_t program) {
  reply_seen_ = true;
  if (program_ > 0 || ended_) return;  // a second reply (another client) changes nothing
  if (program <= 0) {
    log::step("shutdown_reply seen; the kernel's host pid is unknown, so it is not watched");
    return;
  }
  program_ = program;
  program_fd_.reset(static_cast<int>(syscall(SYS_pidfd_open, program, 0)));
  last_cpu_ = process_cpu_ticks(program);
  constexpr long kTickNs = std::chrono::nanoseconds(kTick).count();
  itimerspec t{};
  t.it_value.tv_nsec = kTickNs;
  t.it_interval.tv_nsec = kTickNs;
  timerfd_settime(timer_.get(), 0, &t, nullptr);
  log::step("shutdown_reply seen: watching that the kernel (pid %d) exits", static_cast<int>(program));
}

void ShutdownWatch::on_ready(const SandboxProcess& sandbox) {
  std::uint64_t expirations;
  if (read(timer_.get(), &expirations, sizeof expirations) != sizeof expirations || ended_) return;
  pollfd exited{program_fd_.get(), POLLIN, 0};
  if (!program_fd_.valid() || poll(&exited, 1, 0) != 0) return;  // it exited: the init follows
  const auto cpu = process_cpu_ticks(program_);
  if (!cpu) return;  // gone (a zombie still has its stat): the pidfd ends the relay
  if (cpu != last_cpu_) {
    last_cpu_ = cpu;
    idle_ticks_ = 0;
    return;
  }
  if (++idle_ticks_ < kIdleLimitTicks) return;
  ended_ = true;
  itimerspec off{};
  timerfd_settime(timer_.get(), 0, &off, nullptr);
  log::warn("the kernel answered shutdown_request but then used no CPU for %lld ms instead of exiting "
            "(ipykernel's shutdown deadlock, see docs/architecture.md); killed it",
            static_cast<long long>(std::chrono::milliseconds(kTick).count() * kIdleLimitTicks));
  // The whole sandbox: its init's death takes every process inside along.
  sandbox.signal(SIGKILL);
}

int status_after_shutdown(bool reply_seen, bool ended_by_watch, int status, bool requested) {
  const bool teardown_crash = status == 128 + SIGABRT || status == 128 + SIGSEGV;
  if (!reply_seen) return requested && teardown_crash ? 0 : status;
  if (ended_by_watch && status == 128 + SIGKILL) return 0;
  if (teardown_crash) return 0;
  return status;
}

int ShutdownWatch::reported_status(int status, bool requested) const {
  const int reported = status_after_shutdown(reply_seen_, ended_, status, requested);
  if (reported == status || ended_) return reported;  // the watch's own kill was noted when it happened
  if (reply_seen_)
    log::warn("the kernel died of SIG%s in its own teardown, after it had answered shutdown_request "
              "(ipykernel's IOPub/control thread race, see docs/architecture.md); its shutdown was "
              "complete: exit status 0 instead of %d",
              sigabbrev_np(status - 128), status);
  else  // its reply was still in libzmq's queue when it died (see shutdown_watch.hpp)
    log::warn("the kernel died of SIG%s in its own teardown, after a client's shutdown_request and "
              "before its shutdown_reply got out (ipykernel's IOPub/control thread race, see "
              "docs/architecture.md); it was shutting down as asked: exit status 0 instead of %d",
              sigabbrev_np(status - 128), status);
  return reported;
}

bool ShutdownWatch::on_ready(int fd, const SandboxProcess& sandbox) {
  if (fd != this->fd()) return false;
  on_ready(sandbox);
  return true;
}

std::optional<std::uint64_t> process_cpu_ticks(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  char buf[1024];
  const ssize_t n = read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return std::nullopt;
  buf[n] = '\0';
  // "pid (comm) state ppid ..." : comm may hold spaces and parentheses, so
  // count fields from the last ')'. utime and stime are fields 14 and 15.
  const std::string_view s(buf, static_cast<size_t>(n));
  const size_t close = s.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  const char* p = buf + close + 1;
  while (*p == ' ') ++p;
  if (*p == 'Z' || *p == 'X') return std::nullopt;  // exited, not yet reaped
  char* end = nullptr;
  std::uint64_t fields[13] = {};  // fields 3..15
  for (auto& f : fields) {
    while (*p == ' ') ++p;
    if (*p == '\0') return std::nullopt;
    f = std::strtoull(p, &end, 10);
    if (end == p) {  // the state letter (field 3)
      while (*p && *p != ' ') ++p;
      continue;
    }
    p = end;
  }
  return fields[11] + fields[12];
}

}  // namespace ik
