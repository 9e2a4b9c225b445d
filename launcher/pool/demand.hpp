// Refills of a pool behind its demand run at normal CPU priority (docs/pool.md
// "Cost control"). A refill waits at scheduler autogroup nice 19
// (pool/priority.hpp) so that an idle pool takes only CPU nobody else wants;
// on a machine busy with other work it then gets almost none, and a client
// that claims again (a grading loop: one `nbconvert` per notebook) finds it
// still starting and starts cold, which costs more than the refill it
// duplicates. So a claim that finds no ready sandbox marks its pool "behind":
// the refills then starting (and those in flight) run at nice 0 until
// kBehindWindow passes without such a claim.
#pragma once
#include <sys/types.h>

#include <chrono>

namespace ik::pool {

inline constexpr std::chrono::seconds kBehindWindow{60};
// Set by the daemon in a refill helper's environment; the helper removes it
// before it reads its environment for the plan (so never in the key, the
// sandbox or the kernel).
inline constexpr const char* kNormalRefillEnv = "IK_POOL_REFILL_NORMAL";

// In a helper, first thing: whether the daemon asked for a refill at normal
// priority (and the variable removed from our environment).
bool take_normal_refill_request();

// The daemon: a starting helper's autogroup (its sandbox's refill) to nice 0.
// False when the kernel rate-limited the write (an unprivileged writer may
// change one autogroup per 100 ms, system-wide): try again later. True when
// done, or when it cannot be done (the helper gone, autogroups off).
bool raise_refill(pid_t helper);

// The nice of a process's autogroup ("/autogroup-N nice K"), -1 if unknown.
int autogroup_nice(pid_t pid);

}  // namespace ik::pool
