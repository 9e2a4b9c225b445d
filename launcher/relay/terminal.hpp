// isolate's side of the program's pseudo-terminal (plan.terminal.pty): the
// caller's terminal in raw mode, bytes copied both ways between it and the
// pty's master, window size changes passed on, and the caller's modes put
// back on every way out. Keys like Ctrl-C and Ctrl-Z become bytes that the
// sandbox's own line discipline turns into signals for the program's
// foreground job; nothing inside holds the caller's terminal.
#pragma once
#include <termios.h>

#include <chrono>

#include "apply/monitor.hpp"
#include "apply/sandbox.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"

namespace ik {

// The terminal `fd` in raw mode while this lives; the saved modes are put
// back when it is destroyed (also on error returns) and by suspend().
class RawTerminal {
 public:
  using Clock = std::chrono::steady_clock;
  // How long a restore waits for the terminal to send what it holds.
  static constexpr auto kDrainWait = std::chrono::seconds(2);

  static Result<RawTerminal> enter(int fd);
  RawTerminal(RawTerminal&& o) noexcept : fd_(std::exchange(o.fd_, -1)), saved_(o.saved_), raw_(o.raw_) {}
  RawTerminal& operator=(RawTerminal&&) = delete;
  ~RawTerminal() { restore(); }
  // The caller's modes (at the end, before isolate stops itself): after the
  // output the terminal still holds is sent, as TCSADRAIN would, but a
  // terminal that sends nothing (flow control, a reader that stopped) is
  // waited for only until `deadline`, then the modes change at once.
  void restore(Clock::time_point deadline = Clock::now() + kDrainWait) const;
  // restore(), and nothing more at destruction.
  void restore_and_release(Clock::time_point deadline);
  void reapply() const;  // raw again (after SIGCONT)

 private:
  RawTerminal(int fd, const termios& saved, const termios& raw) : fd_(fd), saved_(saved), raw_(raw) {}
  int fd_;
  termios saved_, raw_;
};

// Runs until the sandbox exits, in place of Monitor::run(): the monitor's
// fds (signals, wall time, exit) plus the copy loop. Then passes on what
// the program wrote last and returns its exit status, with the caller's
// terminal as it was.
Result<int> run_terminal(Monitor& monitor, SandboxProcess& sandbox, UniqueFd master);

}  // namespace ik
