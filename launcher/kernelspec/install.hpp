// `isolated-kernel install`: builds an isolated kernelspec that wraps an
// installed one (or an interpreter), proves it starts, then puts it in place.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "kernelspec/interpreter_mounts.hpp"
#include "kernelspec/jupyter.hpp"
#include "parse/options.hpp"

namespace ik {

enum class InstallWhere { kDefault, kUser, kSysPrefix, kPrefix };

struct InstallRequest {
  std::string name = "python3-isolated";
  std::string display_name;  // default: the wrapped one's, "(isolated)"
  std::string from = "python3";
  std::string python;  // --python: build from this interpreter instead
  InstallWhere where = InstallWhere::kDefault;
  std::string prefix;
  bool replace = false;
  bool check = true;
  Options sandbox;  // mounts, network, limits, setenv given at install time
};

// Where our own files are: the launcher next to this program, the
// kernelspec templates in share/.
std::string sibling_program(const std::string& name);
std::string template_dir(const std::string& name);

// The kernel.json for `req` wrapping `wrapped` (pure apart from `probe`):
// exposed for unit tests.
struct WrappedKernel {
  nlohmann::json spec;                       // the wrapped kernel.json
  std::vector<std::string> argv;             // its argv with argv[0] made absolute
  std::vector<std::string> detected_mounts;  // ro mounts the interpreter needs
};
nlohmann::json make_isolated_spec(const InstallRequest& req, const WrappedKernel& wrapped, const std::string& launcher);
// The kernel a kernelspec `source` (installed as `from`) runs: its spec and
// argv, checked (not broken, not already isolated, argv strings, not empty).
// argv[0] is left as written (install makes it absolute).
Result<WrappedKernel> wrapped_kernel(const std::string& from, const KernelspecInfo& source);

// Returns the installed directory; empty when req.sandbox.print_plan (the
// plan was printed, nothing installed).
Result<std::string> install_kernelspec(const InstallRequest& req);

}  // namespace ik
