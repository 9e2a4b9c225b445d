// The host side while the sandbox runs: forwards signals to its init (once),
// enforces --wall-time, and notices when it exits. Exposes its fds so the
// launcher can poll them in the relay loop; `isolate` just calls run().
#pragma once
#include <optional>
#include <vector>

#include "apply/sandbox.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"

namespace ik {

// Blocks the forwarded signals and SIGCHLD (call before spawn_sandbox) and
// resets an inherited SIG_IGN on SIGCHLD, which would break waiting.
Status block_sandbox_signals();

class Monitor {
 public:
  static Result<Monitor> create(SandboxProcess& sandbox, std::optional<std::uint64_t> wall_seconds);
  std::vector<int> fds() const;
  // Handles a readable fd. Returns false once the sandbox has exited.
  bool on_ready(int fd);
  // Blocks until the sandbox exits; returns its exit status.
  int run();
  int exit_status() const { return exit_status_; }
  bool timed_out() const { return timed_out_; }

 private:
  Monitor(SandboxProcess& s) : sandbox_(&s) {}
  SandboxProcess* sandbox_;
  UniqueFd signal_fd_, timer_fd_;
  int exit_status_ = -1;
  bool timed_out_ = false;
};

}  // namespace ik
