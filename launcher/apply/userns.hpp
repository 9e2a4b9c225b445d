// User namespace: the parent writes the child's ID maps; on failure to
// create namespaces, explain which host setting blocks them.
#pragma once
#include <sys/types.h>

#include <functional>
#include <string>

#include "common/error.hpp"
#include "common/file_io.hpp"
#include "plan/plan.hpp"

namespace ik {

// setgroups=deny, then gid_map, then uid_map: one line each mapping the
// caller's own ids (the only mapping an unprivileged user may write).
Status write_id_maps(pid_t child, const Identity& id);

// Reads a /proc/sys value (common/file_io.hpp's read_sysctl; tests pass their own).
using SysctlReader = std::function<std::string(const std::string&)>;

// Turns clone()'s errno into an Error that names the blocking setting and
// the command that fixes it.
Error diagnose_namespace_failure(int err, const SysctlReader& sysctl = read_sysctl, bool in_container = false);
bool running_in_container();

}  // namespace ik
