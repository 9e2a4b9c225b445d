#include "apply/exit_reason.hpp"

#include <signal.h>
#include <string.h>

#include "apply/limits.hpp"

namespace ik {

std::string kernel_exit_reason(const Plan& plan, int status, const LimitEvents& events, bool timed_out) {
  if (timed_out && plan.limits.wall_seconds)
    return "killed after the wall-time limit of " + std::to_string(*plan.limits.wall_seconds) + "s (--wall-time)";
  if (auto why = explain_limit_exit(plan, status, events, timed_out); !why.empty()) return why;
  if (status == 0) return {};
  if (status > 128 && status < 128 + NSIG) {
    const int sig = status - 128;
    const char* abbrev = sigabbrev_np(sig);  // "KILL"; null for real-time signals
    return "killed by signal " + std::to_string(sig) + (abbrev ? std::string(" (SIG") + abbrev + ")" : std::string());
  }
  return "exited with status " + std::to_string(status);
}

}  // namespace ik
