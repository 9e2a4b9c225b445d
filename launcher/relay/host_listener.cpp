#include "relay/host_listener.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace ik::relay {
namespace {

// libzmq's default ZMQ_BACKLOG.
constexpr int kBacklog = 100;

Error bind_error(const char* channel, const std::string& address, int e) {
  return sys_error(std::string("relay: bind the ") + channel + " channel at " + address, e,
                   e == EADDRINUSE ? "another process already uses that port" : "");
}

Result<UniqueFd> bind_tcp(const std::string& ip, int port, const char* channel, const std::string& address) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  // "*" is libzmq's (and jupyter's) spelling of "all interfaces".
  const char* node = (ip == "*" || ip.empty()) ? nullptr : ip.c_str();
  if (int rc = ::getaddrinfo(node, service.c_str(), &hints, &res); rc != 0)
    return usage_error("relay: cannot resolve " + address + ": " + ::gai_strerror(rc),
                       "fix \"ip\" in the connection file");
  int last_errno = EADDRNOTAVAIL;
  for (addrinfo* a = res; a; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
      last_errno = errno;
      continue;
    }
    // As libzmq: a kernel restarted on the same ports must not wait for
    // TIME_WAIT sockets of its predecessor.
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd.get(), kBacklog) == 0) {
      ::freeaddrinfo(res);
      return fd;
    }
    last_errno = errno;
  }
  ::freeaddrinfo(res);
  return bind_error(channel, address, last_errno);
}

Result<UniqueFd> bind_ipc(const std::string& path, const char* channel, const std::string& address) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path)
    return usage_error("relay: ipc path " + path + " is too long",
                       "unix socket paths are limited to " + std::to_string(sizeof addr.sun_path - 1) + " bytes");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return sys_error("relay: socket(AF_UNIX)");
  // As libzmq's ipc bind: a socket file left by a previous run is replaced,
  // but never anything that is not a socket.
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd.get(), kBacklog) != 0)
    return bind_error(channel, address, errno);
  return fd;
}

}  // namespace

Result<HostListener> HostListener::bind(const ConnectionInfo& host, int port, const char* channel) {
  HostListener l;
  l.address_ = host.endpoint(port);
  if (host.transport == "tcp") {
    auto fd = bind_tcp(host.ip, port, channel, l.address_);
    if (!fd) return fd.error();
    l.fd_ = std::move(*fd);
    l.tcp_ = true;
    return l;
  }
  const std::string path = host.ip + "-" + std::to_string(port);
  auto fd = bind_ipc(path, channel, l.address_);
  if (!fd) return fd.error();
  l.fd_ = std::move(*fd);
  l.ipc_path_ = path;
  return l;
}

HostListener HostListener::adopt_tcp(UniqueFd fd, std::string address) {
  HostListener l;
  l.fd_ = std::move(fd);
  l.address_ = std::move(address);
  l.tcp_ = true;
  return l;
}

HostListener::~HostListener() {
  if (!ipc_path_.empty() && fd_.valid()) ::unlink(ipc_path_.c_str());
}

UniqueFd HostListener::accept() const {
  UniqueFd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (c.valid() && tcp_) {
    // libzmq batches messages itself and sets TCP_NODELAY on every tcp
    // socket; without it a small reply would wait for Nagle's timer.
    int one = 1;
    ::setsockopt(c.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return c;
}

}  // namespace ik::relay
