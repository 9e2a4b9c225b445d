// Resource limits applied to the program with setrlimit. Lowering always
// works; limits are per process (RLIMIT_NPROC counts the host uid's
// processes, which is why --nproc is documented as such).
#pragma once
#include <sys/types.h>

#include "common/error.hpp"
#include "parse/options.hpp"

namespace ik {

Status apply_rlimits(const Limits& limits);

// Host side, before clone: warns about limits that will not hold, e.g.
// RLIMIT_NPROC, which the kernel does not enforce for a root caller.
void warn_ineffective_limits(const Limits& limits, uid_t caller);

}  // namespace ik
