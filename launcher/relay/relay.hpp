// The relay: joins the host-side Jupyter sockets (bound at exactly the ports
// of the host's connection file) to the sandboxed kernel's ipc sockets, so
// the kernel can live in its own network namespace. One thread, one
// zmq_poll loop, whole multipart messages forwarded verbatim (no HMAC key
// needed).
#pragma once
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include <zmq.hpp>

#include "common/error.hpp"
#include "relay/connection_file.hpp"

namespace ik::relay {

enum class Channel : int { kShell = 0, kIopub, kStdin, kControl, kHb };
inline constexpr size_t kChannelCount = 5;
const char* channel_name(Channel c);

struct RelayOptions {
  // Cap on one multipart message from the kernel side: the sum of its frame
  // sizes plus 64 bytes per frame (libzmq's per-frame overhead, so a flood
  // of empty frames counts too). Larger messages are dropped and counted.
  // Also set as ZMQ_MAXMSGSIZE on the kernel-side sockets: libzmq applies
  // it per frame, before buffering, by cutting the ipc connection; the
  // relay then reconnects that channel (counted in kernel_link_resets).
  size_t max_message_bytes = size_t{256} << 20;
  // SNDHWM/RCVHWM of every socket, in messages (per peer for ROUTER/XPUB).
  int high_water_mark = 1000;
};

struct DirectionCounters {
  uint64_t messages = 0;  // forwarded
  uint64_t bytes = 0;     // forwarded, sum of frame sizes
  uint64_t dropped = 0;   // receiver full or unknown (never blocks the loop)
};

struct ChannelCounters {
  DirectionCounters to_kernel;      // host client -> kernel
  DirectionCounters to_host;        // kernel -> host client
  uint64_t oversized = 0;           // kernel-side messages over max_message_bytes
  uint64_t kernel_link_resets = 0;  // kernel-side ipc link lost and redialled
                                    // (also once per channel at kernel exit)
};

struct RelayCounters {
  std::array<ChannelCounters, kChannelCount> channels{};
  const ChannelCounters& operator[](Channel c) const { return channels[static_cast<size_t>(c)]; }
};

class Relay {
 public:
  // Binds the host side at host.endpoint(port) for each channel (ROUTER for
  // shell/control/stdin/hb, verbose XPUB for iopub) and connects the kernel
  // side to "ipc://<kernel_ipc_base>-N" (DEALER, XSUB for iopub; N as in
  // KernelIpcPort). Connecting never waits for the kernel: messages queue
  // until it binds. The context must outlive the Relay.
  static Result<std::unique_ptr<Relay>> create(zmq::context_t& ctx, const ConnectionInfo& host,
                                               const std::string& kernel_ipc_base,
                                               RelayOptions options = {});
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Forwards messages until on_fd_ready returns false. Blocks in zmq_poll
  // without timeout; calls on_fd_ready(fd) when one of extra_fds is readable
  // or in error/hang-up (the callback must consume that state, or the loop
  // spins). An error is returned only if polling or receiving fails (e.g.
  // the context was terminated).
  Status run(const std::vector<int>& extra_fds, const std::function<bool(int fd)>& on_fd_ready);

  // Snapshot; safe to call from any thread while run() is going.
  RelayCounters counters() const;
  // For -v logging: one line per channel that saw traffic, joined by '\n'
  // (no trailing newline), or "no traffic".
  std::string describe_counters() const;
  // The ZMQ_ROUTING_ID of the kernel-side DEALERs (same on all of them).
  const std::string& routing_id() const { return routing_id_; }

 private:
  struct AtomicDirection {
    std::atomic<uint64_t> messages{0}, bytes{0}, dropped{0};
  };
  struct Link {
    Channel channel;
    zmq::socket_t host;
    zmq::socket_t kernel;
    AtomicDirection to_kernel, to_host;
    std::atomic<uint64_t> oversized{0}, resets{0};
    std::string kernel_endpoint;
    zmq::socket_t monitor;  // PAIR receiving the kernel socket's link events
    std::unordered_set<std::string> seen_clients;  // -v logging only
    size_t clients_logged = 0;
  };
  using Frames = std::vector<zmq::message_t>;

  Relay(RelayOptions options, std::string routing_id);
  Status open_link(zmq::context_t& ctx, Channel c, const std::string& host_endpoint,
                   const std::string& kernel_endpoint, bool ipv6);
  Status watch_kernel_link(zmq::context_t& ctx, Link& link);
  Status handle_link_event(Link& link);
  Status forward_to_kernel(Link& link);
  Status forward_to_host(Link& link);
  void note_client(Link& link, const zmq::message_t& first_frame);
  void count_oversized(Link& link, size_t bytes);

  RelayOptions options_;
  std::string routing_id_;
  std::array<std::unique_ptr<Link>, kChannelCount> links_;
  Frames frames_;  // reused receive buffer
};

}  // namespace ik::relay
