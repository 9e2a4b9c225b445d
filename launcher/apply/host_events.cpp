#include "apply/host_events.hpp"

#include <poll.h>

#include <cerrno>

namespace ik {

std::vector<int> HostEvents::fds() const {
  std::vector<int> out = monitor_.fds();
  for (const EventSource* s : sources_)
    for (int fd : s->fds()) out.push_back(fd);
  return out;
}

bool HostEvents::on_ready(int fd) {
  for (EventSource* s : sources_)
    if (s->on_ready(fd, sandbox_)) return true;
  return monitor_.on_ready(fd);
}

int HostEvents::poll_until_exit() {
  for (;;) {
    std::vector<pollfd> pfds;
    for (int fd : fds()) pfds.push_back(pollfd{fd, POLLIN, 0});
    if (poll(pfds.data(), pfds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return monitor_.run();  // cannot happen with valid fds: the plain wait
    }
    for (const auto& p : pfds)
      if (p.revents && !on_ready(p.fd)) return monitor_.exit_status();
  }
}

}  // namespace ik
