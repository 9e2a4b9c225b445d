// The sandbox plan a kernelspec's kernel would get if Jupyter started it
// now in the current directory: `isolated-kernel show` prints it, `install`
// builds it first to reject bad settings before starting anything, and
// prints it for `install --print-plan`.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.hpp"
#include "plan/host.hpp"
#include "plan/plan.hpp"

namespace ik {

// `runtime_dir`: jupyter_client's runtime directory (where the connection
// file would be).
Result<Plan> preview_plan(const nlohmann::json& spec, const std::string& resource_dir, const HostInfo& host,
                          const std::string& runtime_dir);

}  // namespace ik
