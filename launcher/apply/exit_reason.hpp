// Why a kernel ended, in one line for its client ("Kernel stopped: ...").
#pragma once
#include <string>

#include "apply/cgroup.hpp"
#include "plan/plan.hpp"

namespace ik {

// The reason to tell the client after the sandbox exited with `status`
// (128 + N for signal N), or "" for a normal end (status 0) and for a kernel
// stopped because its client is gone. Names the limit when one explains it
// (explain_limit_exit), the wall time, else the signal or the exit status.
std::string kernel_exit_reason(const Plan& plan, int status, const LimitEvents& events, bool timed_out);

}  // namespace ik
