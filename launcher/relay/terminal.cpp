#include "relay/terminal.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "common/log.hpp"

namespace ik {

Result<RawTerminal> RawTerminal::enter(int fd) {
  termios saved;
  if (tcgetattr(fd, &saved) != 0) return sys_error("read the terminal's modes", errno, "try --no-pty");
  termios raw = saved;
  cfmakeraw(&raw);
  raw.c_cc[VMIN] = 1;
  raw.c_cc[VTIME] = 0;
  // TCSADRAIN, not TCSAFLUSH: keys typed ahead go to the program.
  if (tcsetattr(fd, TCSADRAIN, &raw) != 0) return sys_error("put the terminal in raw mode", errno, "try --no-pty");
  return RawTerminal(fd, saved, raw);
}

void RawTerminal::restore(Clock::time_point deadline) const {
  if (fd_ < 0) return;
  // TCSADRAIN alone would wait in the kernel without limit for the output
  // queue to empty (TIOCOUTQ: what the driver still holds; 0 on a pty,
  // whose writes go straight to the other side's buffer).
  int queued = 0;
  while (ioctl(fd_, TIOCOUTQ, &queued) == 0 && queued > 0 && Clock::now() < deadline) usleep(10'000);
  tcsetattr(fd_, queued > 0 ? TCSANOW : TCSADRAIN, &saved_);
}

void RawTerminal::restore_and_release(Clock::time_point deadline) {
  restore(deadline);
  fd_ = -1;
}

void RawTerminal::reapply() const {
  if (fd_ >= 0) tcsetattr(fd_, TCSADRAIN, &raw_);
}

namespace {

constexpr size_t kBufferCap = 64 * 1024;               // per direction; a full one stops reading its source
constexpr size_t kChunk = 4096;                        // at most what a pipe or tty said it has room for
constexpr auto kFinishWait = std::chrono::seconds(2);  // as StdioPump::finish's

// A tty reopened through /proc with O_NONBLOCK: a new open file description,
// so the flag never shows on the caller's (the shell's) own, and a stalled
// terminal cannot block the loop (signals, --wall-time). -1 when that is
// not possible; the original fd is then written in chunks after POLLOUT.
int reopen_nonblocking_tty(int fd) {
  if (!isatty(fd)) return -1;
  return open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
}

bool retry(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

class TerminalRelay {
 public:
  TerminalRelay(Monitor& monitor, SandboxProcess& sandbox, UniqueFd master)
      : monitor_(monitor), sandbox_(sandbox), master_(std::move(master)) {}

  Status start();
  Result<int> run();

 private:
  enum Slot { kMonitor, kSignal, kIn, kMaster, kOut };
  void add(int fd, short events, Slot slot);
  void on_signal();
  void read_in();
  void write_master();
  bool read_master();
  void write_out();
  void caller_gone(const char* why);
  void sync_window_size() const;
  void suspend_self();
  int finish();

  Monitor& monitor_;
  SandboxProcess& sandbox_;
  UniqueFd master_;
  UniqueFd signal_fd_;  // SIGWINCH, SIGCONT, SIGTSTP
  UniqueFd out_reopened_;
  int out_fd_ = STDOUT_FILENO;
  bool in_tty_ = false;
  std::optional<RawTerminal> raw_;
  std::string to_program_, to_caller_;
  bool in_open_ = true, master_open_ = true, out_open_ = true, hup_sent_ = false;
  bool master_hangup_ = false;  // POLLHUP seen while not reading: wait for room before polling it again
  std::vector<pollfd> pfds_;
  std::vector<Slot> slots_;
};

Status TerminalRelay::start() {
  // Ours alone (received from the init), so O_NONBLOCK bothers no one.
  int fl = fcntl(master_.get(), F_GETFL);
  if (fl < 0 || fcntl(master_.get(), F_SETFL, fl | O_NONBLOCK) != 0) return sys_error("fcntl the pty master");
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGWINCH, SIGCONT, SIGTSTP}) sigaddset(&set, sig);
  if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0) return sys_error("block SIGWINCH");
  signal_fd_.reset(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_.valid()) return sys_error("signalfd for SIGWINCH");
  // A closed stdout is an EPIPE to handle, not a death that skips restore.
  signal(SIGPIPE, SIG_IGN);
  out_reopened_.reset(reopen_nonblocking_tty(STDOUT_FILENO));
  if (out_reopened_.valid()) out_fd_ = out_reopened_.get();
  in_tty_ = isatty(STDIN_FILENO);
  if (in_tty_) {
    auto raw = RawTerminal::enter(STDIN_FILENO);
    if (!raw) return raw.error();
    raw_.emplace(std::move(*raw));
  }
  // The init copied the size at set-up; it may have changed since.
  sync_window_size();
  log::step("pty: copying between the caller's terminal and the program's (raw mode: %s)", in_tty_ ? "yes" : "no");
  return ok();
}

void TerminalRelay::sync_window_size() const {
  winsize ws;
  if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 || ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0)
    ioctl(master_.get(), TIOCSWINSZ, &ws);  // the kernel sends SIGWINCH inside if it changed
}

void TerminalRelay::add(int fd, short events, Slot slot) {
  pfds_.push_back(pollfd{fd, events, 0});
  slots_.push_back(slot);
}

// Like a terminal hanging up: the program's session gets SIGHUP, once.
void TerminalRelay::caller_gone(const char* why) {
  log::step("pty: %s: SIGHUP to the program", why);
  if (!hup_sent_) sandbox_.signal_program(SIGHUP);
  hup_sent_ = true;
}

void TerminalRelay::suspend_self() {
  // Like ssh's ~^Z: the caller's shell gets its terminal back as it was.
  if (raw_) raw_->restore();
  kill(getpid(), SIGSTOP);
  // Continued (SIGCONT is then pending on the signalfd too).
  if (raw_) raw_->reapply();
  sync_window_size();
}

void TerminalRelay::on_signal() {
  signalfd_siginfo si;
  while (read(signal_fd_.get(), &si, sizeof si) == sizeof si) {
    switch (si.ssi_signo) {
      case SIGWINCH: sync_window_size(); break;
      case SIGCONT:
        if (raw_) raw_->reapply();
        sync_window_size();
        break;
      case SIGTSTP: suspend_self(); break;
    }
  }
}

void TerminalRelay::read_in() {
  char buf[kChunk];
  size_t room = std::min(sizeof buf, kBufferCap - to_program_.size());
  ssize_t n = read(STDIN_FILENO, buf, room);
  if (n > 0) {
    if (master_open_) to_program_.append(buf, static_cast<size_t>(n));
    return;
  }
  if (n < 0 && retry(errno)) return;
  in_open_ = false;
  if (in_tty_) return caller_gone("the caller's terminal hung up");
  // Input from a file or pipe ended (--pty): the terminal's end-of-file
  // key, which a shell or cat reading the pty takes as the end.
  termios modes;
  if (master_open_ && tcgetattr(master_.get(), &modes) == 0 && modes.c_cc[VEOF] != _POSIX_VDISABLE)
    to_program_.push_back(static_cast<char>(modes.c_cc[VEOF]));
}

void TerminalRelay::write_master() {
  ssize_t n = write(master_.get(), to_program_.data(), std::min(to_program_.size(), kChunk));
  if (n > 0) to_program_.erase(0, static_cast<size_t>(n));
  else if (n < 0 && !retry(errno)) to_program_.clear();  // EIO: no one has the terminal open any more
}

// False when nothing was there to read (yet).
bool TerminalRelay::read_master() {
  char buf[kChunk];
  size_t room = std::min(sizeof buf, kBufferCap - to_caller_.size());
  ssize_t n = read(master_.get(), buf, room);
  if (n > 0) {
    if (out_open_) to_caller_.append(buf, static_cast<size_t>(n));
    return true;
  }
  if (n < 0 && retry(errno)) return false;
  // EIO: every descriptor of the slave is closed; read nothing more.
  master_open_ = false;
  to_program_.clear();
  return true;
}

void TerminalRelay::write_out() {
  ssize_t n = write(out_fd_, to_caller_.data(), std::min(to_caller_.size(), kChunk));
  if (n > 0) {
    to_caller_.erase(0, static_cast<size_t>(n));
    return;
  }
  if (n < 0 && retry(errno)) return;
  out_open_ = false;
  to_caller_.clear();
  caller_gone("the caller's output is closed");
}

// The sandbox has exited, so every slave descriptor is closed: what the
// program wrote last is still in the master, up to EIO. Deliver all of it,
// within kFinishWait: a caller's terminal that takes nothing (its reader
// stopped) must not keep isolate from ending; the rest is dropped.
int TerminalRelay::finish() {
  // The program's pid may belong to someone else by now: no SIGHUP to it.
  hup_sent_ = true;
  const auto deadline = RawTerminal::Clock::now() + kFinishWait;
  for (;;) {
    // Nothing to read but no EIO: a descriptor of the slave went out of
    // the sandbox (SCM_RIGHTS); nothing more is owed to the caller.
    if (master_open_ && to_caller_.size() < kBufferCap && !read_master()) master_open_ = false;
    if (!out_open_) to_caller_.clear();
    if (to_caller_.empty()) {
      if (!master_open_) break;
      continue;
    }
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - RawTerminal::Clock::now()).count();
    if (left <= 0) break;
    pollfd p{out_fd_, POLLOUT, 0};
    const int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno != EINTR) break;
    // A blocking out_fd_ (not reopened) is written only when it has room.
    if (r > 0) write_out();
  }
  // Modes back within the same deadline (TCSANOW once it has passed).
  if (raw_) raw_->restore_and_release(deadline);
  return monitor_.exit_status();
}

Result<int> TerminalRelay::run() {
  for (;;) {
    pfds_.clear();
    slots_.clear();
    for (int fd : monitor_.fds()) add(fd, POLLIN, kMonitor);
    add(signal_fd_.get(), POLLIN, kSignal);
    if (in_open_ && to_program_.size() < kBufferCap) add(STDIN_FILENO, POLLIN, kIn);
    if (master_open_) {
      short ev = 0;
      if (to_caller_.size() < kBufferCap) ev |= POLLIN;
      if (!to_program_.empty() && !master_hangup_) ev |= POLLOUT;
      if (ev) add(master_.get(), ev, kMaster);
    }
    if (out_open_ && !to_caller_.empty()) add(out_fd_, POLLOUT, kOut);
    if (poll(pfds_.data(), pfds_.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return sys_error("poll");
    }
    for (size_t i = 0; i < pfds_.size(); ++i) {
      const short re = pfds_[i].revents;
      if (!re) continue;
      switch (slots_[i]) {
        case kMonitor:
          if (!monitor_.on_ready(pfds_[i].fd)) return finish();
          break;
        case kSignal: on_signal(); break;
        case kIn: read_in(); break;
        case kMaster:
          if (re & POLLOUT) write_master();
          if (pfds_[i].events & POLLIN) {
            if (re & (POLLIN | POLLHUP | POLLERR)) read_master();
          } else if (re & (POLLHUP | POLLERR)) {
            master_hangup_ = true;  // read (and see EIO) once there is room
          }
          break;
        case kOut: write_out(); break;
      }
    }
  }
}

}  // namespace

Result<int> run_terminal(Monitor& monitor, SandboxProcess& sandbox, UniqueFd master) {
  TerminalRelay relay(monitor, sandbox, std::move(master));
  IK_TRY(relay.start());
  return relay.run();  // the relay, and with it the raw mode, ends here
}

}  // namespace ik
