// Resource limits applied to the program with setrlimit (the ones the
// sandbox's cgroup, if any, does not enforce: plan.rlimits). Lowering always
// works; limits are per process (RLIMIT_NPROC counts the uid's processes,
// which is why --nproc is documented as such).
#pragma once
#include <sys/types.h>

#include <string>

#include "apply/cgroup.hpp"
#include "common/error.hpp"
#include "parse/options.hpp"
#include "plan/plan.hpp"

namespace ik {

Status apply_rlimits(const Limits& limits);

// Host side, before clone: warns about limits that will not hold, e.g.
// RLIMIT_NPROC, which the kernel does not enforce for a root caller.
void warn_ineffective_limits(const Limits& limits, uid_t caller);

// After the sandbox exited with `status` (128+N for signal N): which limit
// ended or hampered it, as one line ("" when none did), e.g. "killed by the
// memory limit of 256M (cgroup memory.max, --memory)". Pure.
// `timed_out`: the monitor killed it at --wall-time (that SIGKILL is then not the CPU limit's).
std::string explain_limit_exit(const Plan& plan, int status, const LimitEvents& events, bool timed_out = false);

}  // namespace ik
