// Low-priority refills where scheduler autogroups do not apply
// (docs/pool.md "Cost control"): a cpu cgroup of low weight next to the
// daemon's, when the daemon may create one and move processes between it
// and its own.
//
// - cgroup v2, a cgroup delegated to us (owned by our uid, `cpu` in its
//   cgroup.controllers: a systemd user service, the user manager's tree):
//   the daemon moves the cgroup's processes into a leaf `ik-pool` (v2 allows
//   processes only in leaves once a controller is enabled for children),
//   enables `+cpu`, and makes `ik-refill` with cpu.weight 1 (the default is
//   100). Weights are relative among siblings: a refill then gets 1/101 of
//   what the pool's claimed kernels get when both want the CPU.
// - cgroup v1 (`cpu` hierarchy), where our cpu cgroup is writable by us
//   (root; or a directory an admin chowned to the user):
//   `isolated-kernel-refill-<uid>` below it with cpu.shares 2 (default 1024).
//
// A helper moves itself into the refill cgroup before it spawns the sandbox
// (init and waiter inherit it) and, at the claim, moves itself, init and the
// kernel back: reversible by the user, unlike a nice value (priority.hpp),
// and nothing of the plan changes. A pool whose plan puts the sandbox into
// a cgroup of its own (--limits cgroup) stays where it is: its limits
// cgroup must not be left.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace ik::pool {

// Where our cpu controller is, from /proc/self/cgroup and
// /proc/self/mountinfo (pure; unit-tested).
struct CpuCgroupPlace {
  int version = 0;  // 1 or 2; 0: none (why says so)
  std::string dir;  // our cgroup's directory in that hierarchy
  std::string why;
};
CpuCgroupPlace locate_cpu_cgroup(const std::string& proc_cgroup, const std::string& mountinfo);

// The refill cgroup the daemon made (empty `refill`: none, `why` says why).
struct RefillCgroups {
  int version = 0;
  std::string normal;  // claimed kernels (and, on v2, the daemon)
  std::string refill;  // waiting sandboxes
  std::string why;     // what was done, or why not
};

// Daemon, at start, only when autogroups do not apply: makes (or reuses)
// the refill cgroup. Also sets it for refill_cgroups() below.
RefillCgroups prepare_refill_cgroups();
// What prepare_refill_cgroups() made in this process (none elsewhere).
const RefillCgroups& refill_cgroups();
// Daemon, at exit: removes the refill cgroup (when nothing is in it).
void remove_refill_cgroup();

// Passed to helpers in their environment as "REFILL\nNORMAL".
inline constexpr const char* kRefillCgroupEnv = "IK_POOL_REFILL_CGROUP";
std::string refill_cgroup_env_value(const RefillCgroups& c);

// Moves process `pid` (all its threads) into the cgroup directory `dir`:
// 0 or the errno.
int move_to_cgroup(const std::string& dir, pid_t pid);

// In a helper (from the environment): into the refill cgroup, unless the
// plan puts the sandbox into a cgroup of its own. True when it moved.
bool enter_refill_cgroup(bool plan_uses_cgroup);
// At the claim: these processes back to the normal cgroup.
void leave_refill_cgroup(const std::vector<pid_t>& pids);

// The daemon raising a starting sandbox a claim waits for: the helper and
// its descendants into the normal cgroup. True when none is in the refill one.
bool raise_from_refill_cgroup(pid_t helper);

}  // namespace ik::pool
