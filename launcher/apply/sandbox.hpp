// Starting a sandbox from a Plan: clone into new namespaces, map ids, let the
// child build the root, and report set-up errors back. The ordered child
// steps live in child_steps() in sandbox.cpp.
#pragma once
#include <sys/types.h>

#include <optional>
#include <string>

#include "apply/cgroup.hpp"
#include "apply/stdio.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"
#include "plan/plan.hpp"

namespace ik {

// The running sandbox (its PID 1, seen from the host). Owns it: if still
// running when destroyed, it is SIGKILLed (taking the whole pid namespace
// with it) and reaped; then its cgroup, if any, is removed.
class SandboxProcess {
 public:
  SandboxProcess(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  SandboxProcess(SandboxProcess&& o) noexcept
      : pid_(std::exchange(o.pid_, -1)),
        pidfd_(std::move(o.pidfd_)),
        lifeline_(std::move(o.lifeline_)),
        root_(std::move(o.root_)),
        pty_master_(std::move(o.pty_master_)),
        program_(o.program_),
        start_report_(std::move(o.start_report_)),
        start_root_(std::move(o.start_root_)),
        cgroup_(std::move(o.cgroup_)) {
    o.cgroup_.reset();
  }
  SandboxProcess& operator=(SandboxProcess&&) = delete;
  ~SandboxProcess();

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }  // readable when it exits
  void signal(int sig) const;
  // Sends `sig` straight to the program's process group when known (the
  // order of a signal and a message sent after it is then kept, as with a
  // plain kernel), else to the sandbox's init, which forwards it.
  void signal_program(int sig) const;
  // The program's host pid, read once from the init's children list.
  void find_program();
  pid_t program_pid() const { return program_; }  // -1 if unknown
  // Reaps it (blocks until it exits) and returns its exit status.
  int wait();
  // Write end of the "go" pipe, held open while we live: the child checks
  // it for hang-up to learn whether we died before its PDEATHSIG was armed.
  void keep_lifeline(UniqueFd fd) { lifeline_ = std::move(fd); }
  // The sandbox's root directory (O_PATH), sent by the child right after
  // pivot_root. The init is not dumpable, so /proc/<pid>/root is closed to
  // an unprivileged caller; paths under root_path() work for this process.
  void keep_root(UniqueFd fd) { root_ = std::move(fd); }
  int root_fd() const { return root_.get(); }
  std::string root_path() const { return "/proc/self/fd/" + std::to_string(root_.get()); }
  // The master of the program's pty (plan.terminal.pty), sent after the root.
  void keep_pty_master(UniqueFd fd) { pty_master_ = std::move(fd); }
  UniqueFd take_pty_master() { return std::move(pty_master_); }
  // The sandbox's cgroup (plan.cgroup): removed after the sandbox is reaped.
  void own_cgroup(std::optional<SandboxCgroup>& cg) {
    if (cg) cgroup_.emplace(std::move(*cg));
    cg.reset();
  }
  // spawn_sandbox(..., wait_for_exec = false): the set-up report and the
  // root's socket, read only once the init has exited (see there).
  void defer_start_report(UniqueFd report, UniqueFd root) {
    start_report_ = std::move(report);
    start_root_ = std::move(root);
  }
  // After wait(), for a start whose report was deferred: the set-up error
  // that ended the sandbox, as spawn_sandbox would have returned it; nothing
  // when the program was exec'd (or the report was not deferred).
  std::optional<Error> deferred_setup_error();
  // What the cgroup counted (OOM kills, refused forks); zeros without one.
  LimitEvents limit_events() const { return cgroup_ ? cgroup_->events() : LimitEvents{}; }

 private:
  pid_t pid_;
  UniqueFd pidfd_;
  UniqueFd lifeline_;
  UniqueFd root_;
  UniqueFd pty_master_;
  pid_t program_ = -1;
  UniqueFd start_report_, start_root_;
  // Declared last, so destroyed after ~SandboxProcess()'s body has killed and reaped the sandbox.
  std::optional<SandboxCgroup> cgroup_;
};

// Callers block forwarded_signals() and SIGCHLD before calling this (so no
// signal is lost between clone and the monitor loop). Returns once the
// program has been exec'd inside, or with the child's set-up error.
// With `stdio`, the program's fds 0/1/2 are its pipes and /dev/null instead
// of ours (the parent keeps the read ends; see apply/stdio.hpp).
// !wait_for_exec (and no pty in the plan): returns as soon as the child may
// go, without the root, the program's pid or the set-up report, which
// deferred_setup_error() reads after the init has exited. The caller then
// sleeps until the end, as bubblewrap's parent does, instead of waking when
// the program execs (bench/analysis.md, section 1b); signals reach the
// program through the init, which forwards them once it has exec'd.
Result<SandboxProcess> spawn_sandbox(const Plan& plan, ChildStdio* stdio = nullptr, bool wait_for_exec = true);

}  // namespace ik
