#include "relay/prebound.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

namespace ik::relay {

namespace {

// The port a listening tcp socket is bound to; -1 when it is not one.
int listening_tcp_port(int fd) {
  int listening = 0, type = 0;
  socklen_t len = sizeof listening;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening) return -1;
  len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return -1;
  sockaddr_storage addr{};
  len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return -1;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return -1;
}

}  // namespace

std::shared_ptr<PreboundListeners> PreboundListeners::bind(const ConnectionInfo& host) {
  if (host.transport != "tcp") return nullptr;
  auto out = std::make_shared<PreboundListeners>();
  for (size_t i = 0; i < kChannelCount; ++i) {
    const auto c = static_cast<Channel>(i);
    auto l = HostListener::bind(host, host_port(host, c), channel_name(c));
    if (!l) return nullptr;
    out->listeners_[i] = std::move(*l);
  }
  return out;
}

std::shared_ptr<PreboundListeners> PreboundListeners::adopt(const ConnectionInfo& host, std::vector<UniqueFd> fds) {
  if (host.transport != "tcp" || fds.size() != kChannelCount) return nullptr;
  auto out = std::make_shared<PreboundListeners>();
  for (size_t i = 0; i < kChannelCount; ++i) {
    const auto c = static_cast<Channel>(i);
    const int port = host_port(host, c);
    if (listening_tcp_port(fds[i].get()) != port) continue;
    out->listeners_[i] = HostListener::adopt_tcp(std::move(fds[i]), host.endpoint(port));
  }
  return out;
}

std::vector<int> PreboundListeners::fds() const {
  std::vector<int> out;
  for (const auto& l : listeners_) {
    if (!l) return {};
    out.push_back(l->fd());
  }
  return out;
}

size_t PreboundListeners::count() const {
  size_t n = 0;
  for (const auto& l : listeners_) n += l ? 1 : 0;
  return n;
}

std::optional<HostListener> PreboundListeners::take(Channel c) {
  auto& slot = listeners_[static_cast<size_t>(c)];
  std::optional<HostListener> out = std::move(slot);
  slot.reset();
  return out;
}

void PreboundListeners::close_all() {
  for (auto& l : listeners_) l.reset();
}

}  // namespace ik::relay
