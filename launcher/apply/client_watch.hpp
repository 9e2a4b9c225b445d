// Kernels follow their client. A plain ipykernel polls JPY_PARENT_PID and
// exits when that process is gone; the launcher must set it to 1 for the
// sandboxed kernel (its own pid namespace), so it watches the client itself:
// a pidfd of the process that started it, in the relay's event loop (no
// wake-ups while it lives). When the client is gone the kernel is stopped
// (SIGTERM to its process group, SIGKILL to the sandbox after a grace) and
// the launcher exits as for any kernel exit, leaving nothing behind.
#pragma once
#include <sys/types.h>

#include <vector>

#include "apply/event_source.hpp"
#include "apply/sandbox.hpp"
#include "common/fd.hpp"

namespace ik {

// Which process is the client: JPY_PARENT_PID when it names a pid > 1 that
// is the launcher's parent or an ancestor of it (jupyter_client sets its own
// pid, and starts the launcher itself or through a wrapper), else the parent
// at start. A value naming any other process (stale, inherited from an
// outer Jupyter, another user's) is ignored with a -v note: watching it
// would stop the kernel when an unrelated process ends, and miss its real
// client. One naming no process at all is returned as is: the client died
// before the launcher looked (ClientWatch then starts no kernel). Returns
// <= 1 when there is nothing worth watching. `ancestors_only` false: any
// pid is taken (a pooled kernel's helper follows the launcher that claimed
// it, which the pool told it, not its environment).
pid_t client_pid(const char* jpy_parent_pid, pid_t parent_at_start, bool ancestors_only = true);

// The parent of `pid` (as this process's pid namespace numbers it) from
// /proc/<pid>/stat, or -1 when there is no such process.
pid_t parent_of(pid_t pid);

// True if `pid` is this process's parent or one of that one's ancestors
// (pid 1 and this process itself are not), per /proc/<pid>/stat.
bool is_ancestor(pid_t pid);

class ClientWatch : public EventSource {
 public:
  // Opens a pidfd of client_pid(). `parent_at_start` is getppid() read
  // early in main. Without pidfd_open (Linux < 5.3) or a pid to watch,
  // watches nothing (logged under -v).
  static ClientWatch open(const char* jpy_parent_pid, pid_t parent_at_start, bool ancestors_only = true);

  pid_t pid() const { return pid_; }
  // The client died before the watch was set up: start no kernel.
  bool gone_at_start() const { return gone_at_start_; }
  // True once the client is gone and the kernel is being stopped.
  bool stopping() const { return stopping_; }
  // The fds to poll with the monitor's (pidfd, grace timer).
  std::vector<int> fds() const override;
  // Handles a readable fd; false if it is not one of ours. The pidfd is
  // closed once it has fired (it stays readable: level-triggered pollers
  // would spin), which also removes it from an epoll set.
  bool on_ready(int fd, const SandboxProcess& sandbox) override;

  // How long a kernel gets between SIGTERM and SIGKILL.
  static constexpr long kGraceMs = 1000;

 private:
  pid_t pid_ = 0;
  UniqueFd pidfd_, grace_timer_;
  bool gone_at_start_ = false;
  bool stopping_ = false;
};

}  // namespace ik
