// Resource limits applied to the program with setrlimit. Lowering always
// works; limits are per process (RLIMIT_NPROC counts the host uid's
// processes, which is why --nproc is documented as such).
#pragma once
#include "common/error.hpp"
#include "parse/options.hpp"

namespace ik {

Status apply_rlimits(const Limits& limits);

}  // namespace ik
