// Sandbox options on the command line, shared by `isolate` and
// `isolated-kernel-launcher` (CLI11). Usage:
//   CLI::App app; SandboxCli cli(app); app.parse(...); cli.finish(opts);
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "parse/options.hpp"

namespace ik {

class SandboxCli {
 public:
  explicit SandboxCli(CLI::App& app);
  // Merges config file (if any), MNTDIRS, defaults and the given flags into
  // `out`. `mntdirs` is the MNTDIRS environment variable or nullptr.
  Status finish(Options& out, const char* mntdirs) const;

 private:
  CLI::App& app_;
  std::vector<std::string> mnt_lists_;
  std::string build_dir_, tmpfs_size_, hostname_, config_, chdir_, seccomp_, kernelspec_;
  std::vector<std::string> setenv_, keep_env_;
  std::string memory_, cpu_time_, wall_time_, nproc_, nofile_, fsize_, limits_via_;
  bool no_net_ = false, share_net_ = false, root_ = false, print_plan_ = false, allow_userns_ = false;
  int verbose_ = 0;
};

// Limits that cannot run anything (--memory below 4M, --wall-time 0,
// --cpu-time 0) are refused, wherever they come from (flags, --config,
// kernelspec metadata).
inline constexpr std::uint64_t kMinMemoryBytes = 4ull << 20;
Status check_limit_floors(const Limits& limits);

// isolate.sh accepted "-m=LIST" and "-b=DIR"; CLI11 does not, so rewrite
// those to "-m LIST". Give it the options only (see split_command), never
// the program's own arguments.
std::vector<std::string> normalize_short_equals(const std::vector<std::string>& options);
// argv[1..] as strings.
std::vector<std::string> arguments(int argc, char** argv);

// Splits the arguments like env(1) and bwrap: options up to the first word
// that is not an option (or "--"), then the command, untouched.
struct SplitArgs {
  std::vector<std::string> options;
  std::vector<std::string> command;
};
SplitArgs split_command(const CLI::App& app, const std::vector<std::string>& args);

// Parses `args` (options only, after normalize_short_equals) with CLI11. Returns -1 to go on, else the
// exit status (help, version, usage error already printed).
int parse_options(CLI::App& app, std::vector<std::string> options, const char* program);

}  // namespace ik
