// Host listeners bound before anything else, handed to the relay later.
//
// A client (jupyter_client's zmq sockets) connects as soon as the launcher
// runs; a connection refused because nothing listens yet is retried by
// libzmq only after its reconnect interval (100 ms plus up to 100 ms of
// jitter). A pooled kernel is ready well within that, so the claiming
// launcher binds the five tcp ports first thing and passes the listeners
// to the pool helper that relays (docs/pool.md): the client's first
// connection waits in the listen backlog instead of being refused.
// tcp only: an ipc listener removes its socket file when destroyed, so it
// cannot be handed to another process.
#pragma once
#include <array>
#include <memory>
#include <optional>
#include <vector>

#include "common/fd.hpp"
#include "relay/channel.hpp"
#include "relay/connection_file.hpp"
#include "relay/host_listener.hpp"

namespace ik::relay {

class PreboundListeners {
 public:
  // Binds the five tcp ports of `host`; nullptr when the transport is not
  // tcp or any bind fails (the relay then binds itself and reports the
  // error as usual).
  static std::shared_ptr<PreboundListeners> bind(const ConnectionInfo& host);
  // Adopts listening sockets received from another process, in channel
  // order; a descriptor that is not a listening tcp socket bound to that
  // channel's port is dropped (the relay then binds that port itself).
  static std::shared_ptr<PreboundListeners> adopt(const ConnectionInfo& host, std::vector<UniqueFd> fds);

  // The descriptors still held, in channel order (for SCM_RIGHTS); empty
  // unless all five are held.
  std::vector<int> fds() const;
  // How many listeners are held.
  size_t count() const;
  // The listener of channel `c`, once; nullopt when not held.
  std::optional<HostListener> take(Channel c);
  // Closes every listener still held (they were passed on).
  void close_all();

 private:
  std::array<std::optional<HostListener>, kChannelCount> listeners_;
};

}  // namespace ik::relay
