#include "plan/terminal.hpp"

namespace ik {

TerminalPlan choose_terminal(PtyMode mode, bool stdin_tty, bool stdout_tty, bool stderr_tty, bool foreground) {
  TerminalPlan t;
  switch (mode) {
    case PtyMode::kNever: t.why = "--no-pty"; return t;
    case PtyMode::kAlways:
      t.pty = true;
      t.why = "--pty";
      break;
    case PtyMode::kAuto:
      if (!stdin_tty || !stdout_tty) {
        t.why = std::string(!stdin_tty ? "stdin" : "stdout") + " is not a terminal";
        return t;
      }
      if (!foreground) {
        t.why = "isolate is in the background of its terminal";
        return t;
      }
      t.pty = true;
      t.why = "stdin and stdout are terminals";
      break;
  }
  // A terminal goes to the pty (no terminal of the caller enters the
  // sandbox); a redirected stderr stays apart from the output, as asked.
  t.stderr_to_pty = stderr_tty;
  return t;
}

}  // namespace ik
