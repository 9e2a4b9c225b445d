// Refills at a low CPU priority (docs/pool.md "Cost control"). A waiting
// sandbox (its helper, init and waiter: one session, since the sandbox takes
// no session of its own, apply/session.hpp) runs in the scheduler autogroup
// of that session. Its nice is set to 19 while it is built, and back to 0
// once it waits ready (pool/helper.cpp). Unlike a process's nice value (which an
// unprivileged kernel could never lower again), an autogroup's nice may be
// set to any value >= 0 by the owner (kernel: proc_sched_autogroup_set_nice).
#pragma once
#include <sys/types.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>

namespace ik::pool {

inline constexpr int kRefillNice = 19;

// Whether autogroup nice reaches our processes: autogroup enabled
// (kernel.sched_autogroup_enabled) and we are in the root cpu cgroup (a task
// in another cpu cgroup is scheduled by that group, not by its autogroup).
struct PriorityProbe {
  bool low = false;
  std::string why;                 // what decides it, for `pool status` and `pool start`
  std::string mechanism = "none";  // "autogroup", "cgroup" (pool/cpu_cgroup.hpp) or "none"
};
PriorityProbe probe_refill_priority();
// The daemon's: autogroups where they apply, else the cgroup fallback it
// made at start (pool/cpu_cgroup.hpp), else none and why.
PriorityProbe daemon_refill_priority();
// The same from its inputs (unit-tested): the sysctl's value, the text of
// /proc/self/cgroup, and cgroup v2's root cgroup.subtree_control.
PriorityProbe refill_priority_from(const std::string& autogroup_enabled, const std::string& proc_cgroup,
                                   const std::string& v2_root_subtree_control);

// Sets the nice of our own autogroup, retrying while the kernel says EAGAIN
// (an unprivileged writer may change one autogroup per 100 ms, system-wide)
// for up to `retry_ms`. 0 or the errno.
int set_own_autogroup_nice(int nice, int retry_ms);
// In a helper, first thing: our autogroup to kRefillNice when autogroups
// apply (a few tries while rate-limited). The autogroup's nice afterwards.
int lower_refill_priority();
// The nice of our own autogroup ("/autogroup-N nice K"), -1 if unknown.
int own_autogroup_nice();
// The same for another process of ours (the daemon raising a starting
// sandbox a claim waits for, pool/run_hold.hpp): one write, 0 or the errno.
int set_autogroup_nice_of(pid_t pid, int nice);
int autogroup_nice_of(pid_t pid);

// What a claim says (under the launcher's -v) when raising its autogroup
// back to nice 0 failed for good: empty for success and for EAGAIN (the rate
// limit, retried).
std::string claim_raise_problem(int err);

// At a claim: our autogroup (the kernel's, its init's and the relay's) back
// to nice 0 without making the claim wait. One try now; if the kernel asks
// us to wait, a thread retries every few ms until it took (or until this
// object ends with the helper). Another error does not fail the claim (the
// kernel runs, at low priority); report_to_launcher() says it.
class NormalPriorityAtClaim {
 public:
  NormalPriorityAtClaim();
  ~NormalPriorityAtClaim();
  NormalPriorityAtClaim(const NormalPriorityAtClaim&) = delete;
  NormalPriorityAtClaim& operator=(const NormalPriorityAtClaim&) = delete;
  // Call once our stderr is the claiming launcher's: a failed raise is said
  // there under -v, now or when the retry thread meets it.
  void report_to_launcher();

 private:
  void failed(int err);
  std::mutex mu_;  // error_ and reporting_: the retry thread's and ours
  int error_ = 0;
  bool reporting_ = false;
  std::atomic<bool> stop_{false};
  std::thread retry_;
};

}  // namespace ik::pool
