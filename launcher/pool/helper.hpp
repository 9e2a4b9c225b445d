// `isolated-kernel-launcher --pool-helper FD ...`: builds one waiting
// sandbox for the pool daemon (docs/pool.md), and after a claim runs the
// kernel exactly as a cold launcher does from its running step.
#pragma once
#include "parse/options.hpp"
#include "relay/relay.hpp"

namespace ik::pool {

// Builds the waiting sandbox, waits for a claim, then runs the kernel from
// the running step of the one lifecycle (apply/lifecycle.hpp) with the
// launcher's hooks (relay/kernel_run.hpp). Returns the kernel's exit status.
int run_helper(Options& opts, int ctl_fd, const relay::RelayOptions& relay_options);

}  // namespace ik::pool
