// isolate's side of the program's pseudo-terminal (plan.terminal.pty): the
// caller's terminal in raw mode, bytes copied both ways between it and the
// pty's master, window size changes passed on, and the caller's modes put
// back on every way out. Keys like Ctrl-C and Ctrl-Z become bytes that the
// sandbox's own line discipline turns into signals for the program's
// foreground job; nothing inside holds the caller's terminal.
#pragma once
#include <termios.h>

#include "apply/monitor.hpp"
#include "apply/sandbox.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"

namespace ik {

// The terminal `fd` in raw mode while this lives; the saved modes are put
// back when it is destroyed (also on error returns) and by suspend().
class RawTerminal {
 public:
  static Result<RawTerminal> enter(int fd);
  RawTerminal(RawTerminal&& o) noexcept : fd_(std::exchange(o.fd_, -1)), saved_(o.saved_), raw_(o.raw_) {}
  RawTerminal& operator=(RawTerminal&&) = delete;
  ~RawTerminal() { restore(); }
  void restore() const;  // the caller's modes (before isolate stops itself, say)
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
