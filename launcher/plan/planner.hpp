// Options + HostInfo -> Plan. Resolves every host path now (before clone),
// orders mounts parent-before-child, and rejects what cannot work. Pure:
// all it learns about the host's files comes through HostInfo::fs.
#pragma once
#include <vector>

#include "common/error.hpp"
#include "parse/options.hpp"
#include "plan/host.hpp"
#include "plan/plan.hpp"

namespace ik {

// `extra` ops (e.g. the launcher's connection file) are added after the
// user's mounts and ordered with them.
Result<Plan> build_plan(const Options& opts, const HostInfo& host, const std::vector<MountOp>& extra = {});

// realpath(3) of a mount's source through `fs`; errors name the path and
// the entry it came from (and a misspelt flag, "ro:" without a path).
Result<std::string> host_realpath(const std::string& path, const std::string& entry, const HostFs& fs);

// The curated /etc entries made visible read-only (when present on the host).
const std::vector<std::string>& curated_etc_entries();

// The environment the program sees: the allow-list, --keep-env, --setenv.
std::vector<std::string> build_environment(const Options& opts, const HostInfo& host, const Identity& id);

}  // namespace ik
