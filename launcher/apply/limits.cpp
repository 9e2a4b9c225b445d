#include "apply/limits.hpp"

#include <sys/resource.h>

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
              "RLIMIT_NPROC); run as an unprivileged user to limit processes");
}

}  // namespace ik
