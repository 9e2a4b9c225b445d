// Something the host side serves while a sandbox runs (the launcher's client
// watch and shutdown watch, the program's output pump), in whichever loop
// runs: the poll loop of HostEvents (apply/host_events.hpp) or the relay's
// epoll loop, which takes the same fds as extras. One interface, so a loop
// dispatches by owner instead of by an if-chain of fds.
#pragma once
#include <vector>

namespace ik {

class SandboxProcess;

class EventSource {
 public:
  virtual ~EventSource() = default;
  // The fds to watch for readability (level-triggered state: a source
  // consumes what made its fd readable). A poll loop asks every turn; the
  // relay registers them once, so a source may drop an fd (closing it also
  // takes it out of an epoll set) but never adds one later.
  virtual std::vector<int> fds() const = 0;
  // Handles a readable fd; false if it is not one of ours.
  virtual bool on_ready(int fd, const SandboxProcess& sandbox) = 0;

 protected:
  EventSource() = default;
  EventSource(const EventSource&) = default;
  EventSource& operator=(const EventSource&) = default;
};

}  // namespace ik
