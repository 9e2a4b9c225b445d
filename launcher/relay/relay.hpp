// The relay: joins the host-side Jupyter ports (bound at exactly the
// addresses of the host's connection file) to the sandboxed kernel's ipc
// sockets, so the kernel can live in its own network namespace.
//
// It relays bytes, not messages: every client connection gets its own
// connection to the kernel's socket for that channel, and ZMTP (greeting,
// handshake, frames) passes through verbatim, so the kernel sees each client
// exactly as a plain kernel would (identities, subscriptions, heartbeats).
// The relay reads only ZMTP frame headers, to count messages and to refuse
// oversized or malformed output of the kernel before it reaches a client.
// One thread, one edge-triggered epoll set, a fixed buffer per direction:
// host memory is bounded in bytes whatever the kernel does.
#pragma once
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "relay/channel.hpp"
#include "relay/connection_file.hpp"
#include "relay/counters.hpp"

namespace ik::relay {

class PreboundListeners;

struct RelayOptions {
  // Cap on one message from the kernel: the sum of its frame sizes plus
  // 64 bytes per frame (so a flood of empty frames counts too). A kernel
  // that starts a larger one has that client connection cut before any of
  // the message is sent on; the client's libzmq reconnects by itself.
  size_t max_message_bytes = size_t{256} << 20;
  // Bytes buffered per direction of each client connection; when full, the
  // relay stops reading that side (back-pressure, as a socket buffer).
  size_t buffer_bytes = size_t{256} << 10;
  // Client connections per channel; more are accepted and closed at once.
  // High, because anyone on the host may connect to a tcp port (without
  // the key they can send nothing the kernel accepts) and a low cap would
  // let them lock the real client out; an idle connection costs two fds
  // and no buffer (buffers are allocated when data flows).
  size_t max_connections_per_channel = 1024;
  // Called (from run()) when the kernel sends a shutdown_reply on control,
  // before it is passed on: see apply/shutdown_watch.hpp.
  std::function<void()> on_shutdown_reply;
  // Host listeners bound earlier (relay/prebound.hpp): used instead of
  // binding those ports again.
  std::shared_ptr<PreboundListeners> prebound;
};

// Where the kernel's sockets are: an O_PATH fd of the sandbox directory
// that holds "<prefix>-1" (shell) ... "<prefix>-5" (hb), see KernelIpcPort.
struct KernelSocketDir {
  int dir_fd = -1;  // dup'ed by the relay
  std::string prefix;
};

class Relay {
 public:
  // Binds the host side (tcp or ipc, as the connection file says). Does not
  // wait for the kernel: a client's connection waits until the kernel's
  // socket appears (inotify on the directory), then is joined to it.
  static Result<std::unique_ptr<Relay>> create(const ConnectionInfo& host, const KernelSocketDir& kernel,
                                               RelayOptions options = {});
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Relays until on_fd_ready returns false, then passes on what the kernel
  // already sent (e.g. a shutdown_reply) and returns. on_fd_ready(fd) is
  // called when one of extra_fds is readable (it must consume that state),
  // before any message of the same wake-up is relayed: a signal the client
  // sent before a message reaches the kernel first. Sleeps in epoll_wait
  // without timeout when idle.
  Status run(const std::vector<int>& extra_fds, const std::function<bool(int fd)>& on_fd_ready);

  // After run(): the header (JSON text) of the last execute_request a
  // client sent on shell whose signature checks with the connection key
  // (relay/execute_tap.hpp), or "" if none.
  const std::string& last_execute_header() const;
  // A client's shutdown_request (signed with the connection file's key) was
  // passed on to the kernel.
  bool shutdown_requested() const;
  // After run(): writes `message` (one complete ZMTP message, see
  // zmtp_encode_message) to every iopub client whose stream from the kernel
  // ended between two messages, waiting up to `timeout` for slow readers.
  // Returns how many clients took all of it. The kernel's iopub stream
  // itself is never altered: this is only used once the kernel is gone.
  size_t publish_to_iopub(const std::string& message, std::chrono::milliseconds timeout);

  // Snapshot; safe to call from any thread while run() is going.
  RelayCounters counters() const;
  // For -v logging: one line per channel that saw traffic, or "no traffic".
  std::string describe_counters() const;

  class Impl;

 private:
  explicit Relay(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ik::relay
