#include "apply/limits.hpp"

#include <signal.h>
#include <sys/resource.h>

#include <vector>

#include "common/log.hpp"

namespace ik {
namespace {

Status set_limit(int resource, const char* name, std::uint64_t value) {
  rlimit current{};
  if (getrlimit(resource, &current) != 0) return sys_error(std::string("getrlimit ") + name);
  // Never raise a hard limit (that needs privileges outside the namespace).
  rlim_t v = static_cast<rlim_t>(value);
  if (current.rlim_max != RLIM_INFINITY && v > current.rlim_max) v = current.rlim_max;
  rlimit lim{v, v};
  if (setrlimit(resource, &lim) != 0) return sys_error(std::string("setrlimit ") + name);
  log::step("limit %s = %llu", name, static_cast<unsigned long long>(v));
  return ok();
}

}  // namespace

Status apply_rlimits(const Limits& limits) {
  if (limits.memory_bytes) IK_TRY(set_limit(RLIMIT_AS, "RLIMIT_AS (--memory)", *limits.memory_bytes));
  if (limits.cpu_seconds) IK_TRY(set_limit(RLIMIT_CPU, "RLIMIT_CPU (--cpu-time)", *limits.cpu_seconds));
  if (limits.nproc) IK_TRY(set_limit(RLIMIT_NPROC, "RLIMIT_NPROC (--nproc)", *limits.nproc));
  if (limits.nofile) IK_TRY(set_limit(RLIMIT_NOFILE, "RLIMIT_NOFILE (--nofile)", *limits.nofile));
  if (limits.fsize_bytes) IK_TRY(set_limit(RLIMIT_FSIZE, "RLIMIT_FSIZE (--fsize)", *limits.fsize_bytes));
  return ok();
}

void warn_ineffective_limits(const Limits& limits, uid_t caller) {
  if (limits.nproc && caller == 0)
    log::warn("warning: --nproc is not enforced when the caller is root (the kernel exempts uid 0 from "
              "RLIMIT_NPROC) and --nproc is not going through a cgroup's pids.max here (see "
              "'isolated-kernel doctor'); run as an unprivileged user to limit processes");
}

std::string explain_limit_exit(const Plan& plan, int status, const LimitEvents& events, bool timed_out) {
  std::vector<std::string> why;
  if (events.oom_kills && plan.limits.memory_bytes)
    why.push_back("killed by the memory limit of " + format_size(*plan.limits.memory_bytes) +
                  " (cgroup memory.max, --memory)");
  if (events.pids_max && plan.limits.nproc)
    why.push_back(std::to_string(events.pids_max) + " fork" + (events.pids_max > 1 ? "s" : "") +
                  " refused at the process limit of " + std::to_string(*plan.limits.nproc) +
                  " (cgroup pids.max, --nproc)");
  // With soft = hard the kernel sends SIGKILL at the limit (SIGXCPU only when it checks late).
  if (status == 128 + SIGXCPU && plan.rlimits.cpu_seconds)
    why.push_back("killed by the CPU time limit of " + std::to_string(*plan.rlimits.cpu_seconds) +
                  "s (RLIMIT_CPU, --cpu-time)");
  else if (status == 128 + SIGKILL && plan.rlimits.cpu_seconds && !timed_out && !events.oom_kills)
    why.push_back("killed by SIGKILL, most likely at the CPU time limit of " +
                  std::to_string(*plan.rlimits.cpu_seconds) + "s (RLIMIT_CPU, --cpu-time)");
  if (status == 128 + SIGXFSZ && plan.rlimits.fsize_bytes)
    why.push_back("killed for writing past the file size limit of " + format_size(*plan.rlimits.fsize_bytes) +
                  " (RLIMIT_FSIZE, --fsize)");
  // An address-space limit too low for the program shows as a crash when
  // mmap fails (SIGSEGV, SIGBUS) or, before main(), as the dynamic loader's
  // "failed to map segment" and its status 127.
  if (plan.rlimits.memory_bytes) {
    const std::string limit = "the --memory limit of " + format_size(*plan.rlimits.memory_bytes) + " (RLIMIT_AS)";
    if (status == 128 + SIGSEGV || status == 128 + SIGBUS)
      why.push_back(std::string("died of ") + (status == 128 + SIGSEGV ? "SIGSEGV" : "SIGBUS") + ", probably at " +
                    limit + ": try a larger --memory");
    else if (status == kExitNotFound)
      why.push_back("exit status 127: if it could not load its libraries (\"failed to map segment\"), that is "
                    "probably " +
                    limit + ": try a larger --memory");
  }
  std::string out;
  for (const auto& w : why) out += (out.empty() ? "" : "; ") + w;
  return out;
}

}  // namespace ik
