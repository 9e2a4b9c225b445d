// isolate's terminal options (--pty, --no-pty). Not in SandboxCli: the
// kernel launcher never gives its kernel a terminal.
#pragma once
#include <CLI/CLI.hpp>

#include "common/error.hpp"
#include "parse/options.hpp"

namespace ik {

class TerminalCli {
 public:
  explicit TerminalCli(CLI::App& app);
  Status finish(Options& out) const;

 private:
  bool pty_ = false, no_pty_ = false;
};

}  // namespace ik
