#include "parse/terminal_cli.hpp"

namespace ik {

TerminalCli::TerminalCli(CLI::App& app) {
  const char* g = "Terminal";
  app.add_flag("--pty", pty_,
               "Give PROG a new pseudo-terminal even when stdin or stdout is not a terminal "
               "(like ssh -tt, docker -t). Default: only when both are terminals")
      ->group(g);
  app.add_flag("--no-pty", no_pty_,
               "No pseudo-terminal: PROG inherits isolate's stdin/stdout/stderr, in a new session without "
               "a controlling terminal (no job control)")
      ->group(g);
}

Status TerminalCli::finish(Options& out) const {
  if (pty_ && no_pty_) return usage_error("--pty and --no-pty contradict each other", "pick one");
  if (pty_) out.pty = PtyMode::kAlways;
  if (no_pty_) out.pty = PtyMode::kNever;
  return ok();
}

}  // namespace ik
