// What `isolated-kernel` asks Jupyter and interpreters: installed
// kernelspecs (through jupyter_client itself, so the search path is exactly
// Jupyter's), the interpreter's prefixes, and a real start of a kernel.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace ik {

struct KernelspecInfo {
  std::string name;
  std::string resource_dir;
  nlohmann::json spec;  // kernel.json content (an object; empty when `error` is set)
  std::string error;    // why kernel.json could not be read, e.g. "DIR/kernel.json:3:7: invalid JSON: ..."
};

// Every kernelspec Jupyter finds, also those whose kernel.json is broken
// (with `error` set), which jupyter_client itself skips.
Result<std::map<std::string, KernelspecInfo>> find_kernelspecs();
KernelspecInfo read_kernelspec(const std::string& name, const std::string& resource_dir);
bool is_isolated(const KernelspecInfo& k);
// spec[key] when it is a string, else `fallback` (kernel.json is user data).
std::string spec_string(const nlohmann::json& spec, const char* key, const std::string& fallback);

// Jupyter directories: user data dir, sys.prefix data dir, system dirs.
struct JupyterDirs {
  std::string user;        // JUPYTER_DATA_DIR or ~/.local/share/jupyter
  std::string sys_prefix;  // <sys.prefix>/share/jupyter
  std::string system;      // first system dir (/usr/local/share/jupyter)
  std::string runtime;     // JUPYTER_RUNTIME_DIR or DATA_DIR/runtime: where connection files go
};
Result<JupyterDirs> jupyter_dirs();

// Interpreter facts that decide what must be mounted for it.
struct InterpreterInfo {
  std::string executable;  // realpath of sys.executable
  std::string prefix, base_prefix;
  std::vector<std::string> paths;  // sys.path entries that exist
};
Result<InterpreterInfo> probe_interpreter(const std::string& python);

// Starts kernel `name` found in `kernels_dir` through jupyter_client, waits
// for a kernel_info reply, imports each of `preload` in it (what a waiting
// pooled kernel imports), shuts it down. ok=false carries the kernel's
// stderr tail; import_error the first module it could not import.
struct StartCheck {
  bool ok = false;
  double seconds = 0;
  std::string error;
  std::string stderr_tail;
  std::string import_error;  // "MODULE: ModuleNotFoundError: No module named 'MODULE'"
};
Result<StartCheck> check_kernel_starts(const std::string& kernels_dir, const std::string& name, int timeout_seconds,
                                       const std::vector<std::string>& preload = {});

}  // namespace ik
