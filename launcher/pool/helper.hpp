// `isolated-kernel-launcher --pool-helper FD ...`: builds one waiting
// sandbox for the pool daemon (docs/pool.md), and after a claim runs the
// kernel exactly as a cold launcher does from its running step.
#pragma once
#include <functional>

#include "apply/client_watch.hpp"
#include "apply/sandbox.hpp"
#include "parse/options.hpp"
#include "plan/plan.hpp"
#include "relay/connection_file.hpp"
#include "relay/stdio_pump.hpp"

namespace ik::pool {

// The cold launcher's running step (relay, monitor, watches, exit notice),
// entered with a sandbox built earlier. Returns the kernel's exit status.
using RunningStep = std::function<int(SandboxProcess&, StdioPump&, const relay::ConnectionInfo&, const Plan&,
                                      ClientWatch&)>;

int run_helper(Options& opts, int ctl_fd, const RunningStep& running_step);

}  // namespace ik::pool
