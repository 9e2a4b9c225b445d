// What a waiting pool sandbox is built from, and what only the launch adds
// (docs/pool.md "Launch-time parts, pool key"). Pure functions over Plans,
// used by the claiming launcher and by the helper that builds the sandbox,
// so both compute the same key.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "plan/plan.hpp"

namespace ik::pool {

inline constexpr const char* kConnectionPlaceholder = "{connection_file}";

// The extra ops a waiting sandbox gets: the private /run/isolated-kernel
// tmpfs (where the kernel's ipc sockets and the waiter's claim socket live).
std::vector<MountOp> waiting_extra_ops();

// Removes the launch-time parts from a plan built with waiting_extra_ops():
// binds whose source is the working directory `cwd_real` (realpath of the
// launch's cwd; the kernelspec's "." mount) and the working directory.
void strip_launch_parts(Plan& plan, const std::string& cwd_real);

// The ops of `full` (the cold plan) that `waiting` lacks, in plan order.
// An error when `waiting` has an op the cold plan lacks (then a pooled
// sandbox would differ from a cold one: never pool it).
Result<std::vector<MountOp>> launch_ops(const Plan& full, const Plan& waiting);

// Every field of an op, for the claim message.
nlohmann::json op_to_json(const MountOp& op);
Result<MountOp> op_from_json(const nlohmann::json& j);

// A kernel argv with the connection file's path replaced by the placeholder.
std::vector<std::string> argv_template(const std::vector<std::string>& argv, const std::string& conn_path);

// The pool key of a waiting plan (plan.argv: the kernel argv template),
// the waiter and the modules it preloads (metadata pool_preload).
std::string pool_key(const Plan& waiting, const std::string& waiter_source, const std::vector<std::string>& preload);

// Environment entries that differ per launch and do not change imports.
bool launch_time_env(const std::string& name);

// The waiter's source: next to the binary in a build tree, else IK_DATADIR.
Result<std::string> waiter_source();

}  // namespace ik::pool
