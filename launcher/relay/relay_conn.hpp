// The relay's connection types (internal to relay.cpp): one client
// connection joined to its own connection to the kernel's socket, each side
// as edge-triggered epoll last saw it, and the epoll user data that says
// what an fd is.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>

#include "common/fd.hpp"
#include "relay/byte_queue.hpp"
#include "relay/frame_tap.hpp"
#include "relay/relay.hpp"
#include "relay/zmtp.hpp"

namespace ik::relay {

// One side of a connection as seen by edge-triggered epoll: what the last
// edge said, until a short read/write or EAGAIN says otherwise.
struct Side {
  UniqueFd fd;
  bool out_armed = false;  // EPOLLOUT in the epoll set (only while a write is pending)
  bool readable = false;
  bool writable = true;  // a fresh socket can take data
  bool eof = false;      // the peer closed its end
};

enum class Io { kDone, kAgain, kEof, kError };

// One non-blocking recv into the free space of `q` (`got` bytes, not yet
// committed: the caller scans them first). Updates the side's readiness.
Io read_into(Side& s, ByteQueue& q, size_t& got);
// One non-blocking send of what `q` holds; consumes what was sent.
Io write_from(Side& s, ByteQueue& q);

// Epoll user data: what an fd is. Stored in stable places (listeners,
// connections, the fixed list of service fds).
struct Watch {
  enum Kind { kListener, kClient, kKernel, kExtra, kKernelDir, kRetryTimer, kHoldTimer } kind;
  int index = 0;  // channel of a listener; fd of an extra
  struct Conn* conn = nullptr;
};

struct Conn {
  Conn(Channel c, size_t buffer, size_t max_message)
      : channel(c), up(buffer), down(buffer), up_scan(SIZE_MAX), down_scan(max_message) {}
  Channel channel;
  Side client, kernel;
  ByteQueue up, down;  // client -> kernel, kernel -> client
  ZmtpScanner up_scan, down_scan;
  uint64_t up_counted_msgs = 0, up_counted_bytes = 0, down_counted_msgs = 0, down_counted_bytes = 0;
  bool dialled = false;  // kernel side connected
  bool dead = false;     // closed; freed after the current batch
  bool queued = false;   // in the ready queue
  bool held = false;     // iopub: kernel side gone, client kept for the launcher's last notice
  std::chrono::steady_clock::time_point held_since;
  std::unique_ptr<FrameObserver> tap;          // shell: verified execute_request headers; control: shutdown_reply
  std::unique_ptr<FrameObserver> request_tap;  // control: verified shutdown_request headers
  Watch client_watch{Watch::kClient, 0, this};
  Watch kernel_watch{Watch::kKernel, 0, this};
};

}  // namespace ik::relay
