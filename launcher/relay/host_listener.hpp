// The host side of one channel: a listening socket at exactly the address
// of the host's connection file, as the kernel itself would have bound it.
#pragma once
#include <string>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "relay/connection_file.hpp"

namespace ik::relay {

class HostListener {
 public:
  // tcp: ip:port (numeric IPv4/IPv6, "*" or a host name), TCP_NODELAY on
  // accepted sockets as libzmq does; ipc: the socket file "<ip>-<port>",
  // replaced if stale and removed again when the listener is destroyed.
  static Result<HostListener> bind(const ConnectionInfo& host, int port, const char* channel);
  // A tcp listener bound elsewhere (relay/prebound.hpp), at `address`.
  static HostListener adopt_tcp(UniqueFd fd, std::string address);
  HostListener() = default;
  HostListener(HostListener&&) noexcept = default;
  HostListener& operator=(HostListener&&) noexcept = default;
  ~HostListener();

  int fd() const { return fd_.get(); }
  const std::string& address() const { return address_; }
  // Non-blocking accept; an invalid fd when there is nothing to accept.
  UniqueFd accept() const;

 private:
  UniqueFd fd_;
  std::string address_;   // for messages: "tcp://..." or "ipc://..."
  std::string ipc_path_;  // removed at destruction
  bool tcp_ = false;
};

}  // namespace ik::relay
