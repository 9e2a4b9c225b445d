// Taking the caller's terminal away from the program (and the sandbox's
// init out of the caller's process group) without a new session.
#pragma once
#include "common/error.hpp"

namespace ik {

// The init and the program: each its own process group, and no controlling terminal, so that
// TIOCSTI cannot type into the caller's shell (CVE-2017-5226) and no
// job-control ioctl reaches the caller's terminal. Done with TIOCNOTTY
// rather than setsid(): setsid() also starts a new scheduler autogroup
// (CONFIG_SCHED_AUTOGROUP), which on a busy machine costs a start about as
// much wall time as all of set-up (measured in bench/analysis.md). Falls
// back to setsid() whenever it cannot tell that the terminal is gone.
Status leave_terminal();

}  // namespace ik
