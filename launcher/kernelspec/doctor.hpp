// `isolated-kernel doctor`: checks what the sandbox needs on this host and
// starts each isolated kernelspec once. One PASS/WARN/FAIL line per check.
#pragma once

namespace ik {

// Returns the exit status: 0 when nothing failed.
int run_doctor(bool check_kernels);

}  // namespace ik
