// Reads what the caller's cgroup v2 offers (plan/cgroup.hpp's CgroupHost)
// from /proc/self/cgroup, /proc/self/mountinfo and our cgroup's files; the
// parsers and the decision (plan_limits) stay pure in plan/cgroup.
#pragma once
#include "plan/cgroup.hpp"

namespace ik {

CgroupHost probe_cgroup_host();

}  // namespace ik
