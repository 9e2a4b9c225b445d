// Everything the host side serves while a sandbox runs: the monitor
// (forwarded signals, --wall-time, the exit) and the event sources the
// program's kind adds. One poll loop for every waiter without a relay
// (isolate --stdio=pipe, the launcher without a relay); the relay polls the
// same fds() in its epoll loop and hands readable ones to on_ready().
#pragma once
#include <vector>

#include "apply/event_source.hpp"
#include "apply/monitor.hpp"
#include "apply/sandbox.hpp"

namespace ik {

class HostEvents {
 public:
  HostEvents(Monitor& monitor, const SandboxProcess& sandbox) : monitor_(monitor), sandbox_(sandbox) {}
  // Served in the order added, after the monitor. Not owned.
  void add(EventSource& source) { sources_.push_back(&source); }
  // The monitor's fds first, then each source's.
  std::vector<int> fds() const;
  // Handles a readable fd. False once the sandbox has exited (its status is
  // then monitor.exit_status()).
  bool on_ready(int fd);
  // Polls fds() (asked again every turn: a source may close an fd once it
  // has fired) until the sandbox exits; returns its exit status.
  int poll_until_exit();

 private:
  Monitor& monitor_;
  const SandboxProcess& sandbox_;
  std::vector<EventSource*> sources_;
};

}  // namespace ik
