// Network namespace: a new one has only `lo`, and it starts DOWN, so a
// kernel binding 127.0.0.1 would fail until we bring it up.
#pragma once
#include <pthread.h>

#include <memory>
#include <string>

#include "common/error.hpp"
#include "common/fd.hpp"

namespace ik {

Status bring_up_loopback();
Status set_hostname(const std::string& name);

// The sandbox's private network namespace, made on a helper thread while the
// calling thread builds the file view. Creating a network namespace is the
// dearest part of the set-up (loopback registration, per-namespace sysctls)
// and needs nothing from the mount namespace, so the two overlap on a
// machine with a free CPU. Until enter() the caller stays in the network
// namespace it was cloned in; it must run nothing untrusted before. When no
// CPU looks idle (/proc/loadavg), start() makes it in place instead, in the
// calling thread, and enter() has nothing left to do.
class PrivateNetwork {
 public:
  // Starts the thread: unshare(CLONE_NEWNET), lo up, an fd to the namespace
  // (or does the first two in place, see above).
  // Call while the host's /proc is still at /proc (before any pivot_root).
  static Result<PrivateNetwork> start();
  // Waits for the thread and moves the calling thread into the namespace.
  Status enter();
  PrivateNetwork(PrivateNetwork&& o) noexcept : state_(std::move(o.state_)), thread_(o.thread_), running_(o.running_) {
    o.running_ = false;
  }
  PrivateNetwork& operator=(PrivateNetwork&&) = delete;
  ~PrivateNetwork();  // joins a thread still running (on an error path)

 private:
  struct State {
    UniqueFd proc;  // the host's /proc, O_PATH: found whatever the caller pivots meanwhile
    UniqueFd ns;    // the new namespace
    Status status = ok();
  };
  static void* run(void* state);
  PrivateNetwork() = default;
  void join();
  std::unique_ptr<State> state_;
  pthread_t thread_{};
  bool running_ = false;
};

}  // namespace ik
