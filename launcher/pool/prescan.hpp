// `pool start` fills the pools of the installed kernelspecs that ask for one
// (metadata.isolated_kernel.pool > 0), so the first launch is warm too
// (docs/pool.md "Cost control"). A pool is keyed by the launcher argv that
// jupyter_client will run, so the scan builds that argv as it does.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kernelspec/jupyter.hpp"

namespace ik::pool {

struct PooledSpec {
  std::string name;
  std::vector<std::string> spec;  // the launcher's argv[1..], {connection_file} kept
  std::map<std::string, std::string> env;
  int size = 0;
};

// The pool of one kernelspec, or nothing when it has none (not isolated,
// unreadable, pool 0). `env`: the daemon's environment (launch-time entries
// are dropped); the kernelspec's "env" is added as jupyter_client does.
// `problem` says why a kernelspec that asks for a pool is skipped.
std::optional<PooledSpec> pooled_spec(const KernelspecInfo& k, const std::map<std::string, std::string>& env,
                                      std::string* problem);

struct PrescanResult {
  std::vector<PooledSpec> specs;
  std::vector<std::string> problems;  // one line each, for pool.log
};
PrescanResult prescan_kernelspecs(char** environ);

}  // namespace ik::pool
