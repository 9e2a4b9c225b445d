// What waiting sandboxes cost in memory (docs/pool.md "Cost control"): the
// proportional set size of their processes, so pages the waiters share
// (the interpreter, ipykernel's modules from the page cache) count once
// in the total rather than once per sandbox.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace ik::pool {

// Pss of /proc/PID/smaps_rollup in KiB; VmRSS of /proc/PID/status when
// smaps_rollup cannot be read; 0 when the process is gone.
long process_memory_kib(pid_t pid);
// The sum over `pids` (those <= 0 are skipped).
long memory_kib(const std::vector<pid_t>& pids);
// "Pss:" (or "VmRSS:") in KiB from a smaps_rollup (or status) text; -1 if absent. Unit-tested.
long kib_field(const std::string& text, const std::string& field);

}  // namespace ik::pool
