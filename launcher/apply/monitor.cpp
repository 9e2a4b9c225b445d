#include "apply/monitor.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>

#include "apply/init.hpp"
#include "common/log.hpp"

namespace ik {

Status block_sandbox_signals() {
  signal(SIGCHLD, SIG_DFL);
  sigset_t set = forwarded_signals();
  sigaddset(&set, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0) return sys_error("block signals");
  return ok();
}

Result<Monitor> Monitor::create(SandboxProcess& sandbox, std::optional<std::uint64_t> wall_seconds) {
  Monitor m(sandbox);
  m.signal_fd_.reset(signalfd(-1, &forwarded_signals(), SFD_CLOEXEC | SFD_NONBLOCK));
  if (!m.signal_fd_.valid()) return sys_error("signalfd");
  if (wall_seconds) {
    m.timer_fd_.reset(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!m.timer_fd_.valid()) return sys_error("timerfd_create");
    itimerspec its{};
    its.it_value.tv_sec = static_cast<time_t>(*wall_seconds);
    if (*wall_seconds == 0) its.it_value.tv_nsec = 1;
    if (timerfd_settime(m.timer_fd_.get(), 0, &its, nullptr) != 0) return sys_error("timerfd_settime");
  }
  return m;
}

std::vector<int> Monitor::fds() const {
  std::vector<int> out{sandbox_->pidfd(), signal_fd_.get()};
  if (timer_fd_.valid()) out.push_back(timer_fd_.get());
  return out;
}

bool Monitor::on_ready(int fd) {
  if (fd == signal_fd_.get()) {
    signalfd_siginfo si;
    while (read(signal_fd_.get(), &si, sizeof si) == sizeof si) {
      log::step("forwarding signal %d to the sandbox", static_cast<int>(si.ssi_signo));
      sandbox_->signal_program(static_cast<int>(si.ssi_signo));
    }
    return true;
  }
  if (timer_fd_.valid() && fd == timer_fd_.get()) {
    std::uint64_t expirations;
    if (read(timer_fd_.get(), &expirations, sizeof expirations) != sizeof expirations) return true;
    timed_out_ = true;
    log::step("wall-time limit reached: killing the sandbox");
    sandbox_->signal(SIGKILL);
    return true;
  }
  if (fd == sandbox_->pidfd()) {
    exit_status_ = sandbox_->wait();
    return false;
  }
  return true;
}

int Monitor::run() {
  std::vector<int> watched = fds();
  std::vector<pollfd> pfds;
  for (int fd : watched) pfds.push_back(pollfd{fd, POLLIN, 0});
  for (;;) {
    int n = poll(pfds.data(), pfds.size(), -1);
    if (n < 0 && errno == EINTR) continue;
    for (auto& p : pfds)
      if (p.revents && !on_ready(p.fd)) return exit_status_;
  }
}

}  // namespace ik
