// The sandbox's own cgroup v2 (plan.cgroup, decided in plan/cgroup.cpp):
// created before clone, the sandbox's init is started inside it (clone3
// CLONE_INTO_CGROUP; see spawn_sandbox), removed when the sandbox is gone.
//
// Order, and why:
//   1. remove empty isolated-kernel-<pid> cgroups of launchers that are gone
//      (killed with SIGKILL, so their destructor never ran);
//   2. leaf mode only: mkdir PARENT/isolated-kernel-<pid>-launcher and move
//      ourselves (never another process) into it, because cgroup v2 lets no
//      controller be enabled for the children of a cgroup holding processes;
//   3. enable the controllers in PARENT/cgroup.subtree_control;
//   4. mkdir PARENT/isolated-kernel-<pid> and write its limits
//      (memory.oom.group, memory.swap.max, memory.max, pids.max);
//   5. the caller clones the sandbox into it;
//   6. at the end (destructor, after the sandbox was reaped): cgroup.kill for
//      anything left, rmdir; leaf mode: disable what we enabled, move back,
//      rmdir the leaf.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "plan/cgroup.hpp"

namespace ik {

// What the cgroup counted, for the exit explanation.
struct LimitEvents {
  std::uint64_t oom_kills = 0;  // memory.events oom_kill
  std::uint64_t pids_max = 0;   // pids.events max: forks refused at pids.max
};

class SandboxCgroup {
 public:
  static Result<SandboxCgroup> create(const CgroupPlan& plan);
  SandboxCgroup(SandboxCgroup&& o) noexcept;
  SandboxCgroup& operator=(SandboxCgroup&&) = delete;
  ~SandboxCgroup();

  const std::string& dir() const { return dir_; }
  // The cgroup's directory, for clone3(CLONE_INTO_CGROUP).
  int fd() const { return fd_.get(); }
  // Moves `pid` in by writing cgroup.procs (the fallback without clone3).
  Status add_process(pid_t pid) const;
  LimitEvents events() const;

 private:
  SandboxCgroup() = default;
  void remove();
  std::string parent_, dir_, leaf_;
  std::vector<std::string> enabled_;  // leaf mode: what we enabled in parent_, undone at the end
  UniqueFd fd_;
  bool created_ = false;
};

// Removes empty cgroups named isolated-kernel-<pid>[-launcher] in `parent`
// whose launcher <pid> no longer exists (left by a launcher killed with
// SIGKILL). A cgroup that still holds processes is left alone (rmdir fails).
void remove_stale_cgroups(const std::string& parent, pid_t self);

// The value of `key` in a flat-keyed cgroup file ("oom_kill 3\n...").
std::optional<std::uint64_t> cgroup_keyed_value(const std::string& text, const std::string& key);

}  // namespace ik
