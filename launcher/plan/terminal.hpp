// Whether the program gets a pseudo-terminal (isolate on a terminal) or
// inherits isolate's stdin/stdout/stderr as they are. Pure decision, made
// from the mode asked for and which of fds 0, 1, 2 are terminals.
#pragma once
#include <string>

#include "parse/options.hpp"

namespace ik {

struct TerminalPlan {
  // A new pty from the sandbox's own devpts is the program's controlling
  // terminal and its stdin and stdout; isolate copies between it and the
  // caller's stdin/stdout (apply/pty.*, relay/terminal.*).
  bool pty = false;
  // With a pty: stderr goes to it too when it is a terminal, else the
  // program keeps isolate's stderr (a file or pipe the caller redirected).
  bool stderr_to_pty = false;
  std::string why;  // for --print-plan and -v
};

// kAuto gives a pty when stdin and stdout are both terminals: like ssh, and
// not when output is redirected (a pty would turn "\n" into "\r\n" there).
// Nor when isolate starts in the background of its terminal (`isolate cmd &`):
// raw mode would stop it there (SIGTTOU) until brought to the foreground.
TerminalPlan choose_terminal(PtyMode mode, bool stdin_tty, bool stdout_tty, bool stderr_tty, bool foreground = true);

}  // namespace ik
