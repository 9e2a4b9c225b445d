// The relay's state and its member functions, shared by relay.cpp (the
// loop: accept, dial, move bytes, back-pressure) and relay_exit.cpp (the
// kernel's last words, held iopub clients, the exit notice). Internal.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "relay/host_listener.hpp"
#include "relay/kernel_sockets.hpp"
#include "relay/relay.hpp"
#include "relay/relay_conn.hpp"

namespace ik::relay {

// Retry interval while a kernel socket file exists but nobody listens: short
// for the gap between bind() and listen() (microseconds in practice), then
// doubling up to libzmq's default reconnect interval, so a stale socket file
// left by a kernel that closed its socket costs no busy polling.
inline constexpr long kFirstRetryNs = 2'000'000;
inline constexpr long kMaxRetryNs = 100'000'000;
// Reads per connection per turn, so one busy connection cannot starve the
// others; the rest waits one turn in the ready queue.
inline constexpr int kTurnBudget = 16;
// Repeated warnings are rate-limited to the 1st, (N+1)th, (2N+1)th, ...
inline constexpr uint64_t kWarnEvery = 100;
// How long the relay keeps passing on the kernel's last words at exit.
inline constexpr auto kDrainTime = std::chrono::milliseconds(250);
// Reads per connection per pass while draining (no other work competes).
inline constexpr int kDrainTurnBudget = 64;
// How long an iopub client whose kernel side ended is held for the exit
// notice while the relay still runs: the sandbox's exit follows its
// kernel's within milliseconds; a kernel that lives on without that
// connection must not keep the client from reconnecting.
inline constexpr auto kHoldTime = std::chrono::milliseconds(1000);

class Relay::Impl {
 public:
  Impl(RelayOptions o) : options_(o) {}

  Status open(const ConnectionInfo& host, const KernelSocketDir& kernel);
  Status run(const std::vector<int>& extra_fds, const std::function<bool(int)>& on_fd_ready);
  RelayCounters counters() const;
  size_t publish_to_iopub(const std::string& message, std::chrono::milliseconds timeout);
  const std::string& last_execute_header() const { return last_execute_header_; }
  bool shutdown_requested() const { return !last_shutdown_request_.empty(); }

 private:
  struct AtomicDirection {
    std::atomic<uint64_t> messages{0}, bytes{0};
  };
  struct ChannelState {
    HostListener listener;
    Watch watch{Watch::kListener, 0, nullptr};
    size_t open = 0;
    std::atomic<uint64_t> connections{0}, refused{0}, oversized{0}, protocol_errors{0}, rejected{0};
    AtomicDirection to_kernel, to_host;
  };

  Status add(int fd, uint32_t events, Watch* w);
  void accept_clients(Channel c);
  void dial(Conn& c);
  void redial_waiting();
  void arm_retry();
  void pump(Conn& c, int budget = kTurnBudget, const char* end_why = nullptr);
  void watch_output(Side& s, Watch* w);
  bool step(Conn& c, bool& progress);
  bool scan_kernel_bytes(Conn& c, const unsigned char* p, size_t n);
  void scan_client_bytes(Conn& c, const unsigned char* p, size_t n);
  void close_conn(Conn& c, const char* why);
  bool hold_for_notice(Conn& c);
  void end_conn(Conn& c, const char* why);
  void release_held();
  void reap();
  void drain_at_exit();
  ChannelState& state(Channel c) { return channels_[static_cast<size_t>(c)]; }
  void flush_counts(Conn& c);

  RelayOptions options_;
  std::array<ChannelState, kChannelCount> channels_;
  std::optional<KernelSockets> kernel_;
  UniqueFd epoll_, retry_timer_, hold_timer_;
  std::string last_execute_header_;    // the last verified one, from any shell client
  std::string last_shutdown_request_;  // the last verified one passed on, from any control client
  std::string key_, signature_scheme_;
  bool retry_armed_ = false;
  long retry_ns_ = kFirstRetryNs;
  Watch dir_watch_{Watch::kKernelDir, 0, nullptr};
  Watch timer_watch_{Watch::kRetryTimer, 0, nullptr};
  Watch hold_watch_{Watch::kHoldTimer, 0, nullptr};
  std::deque<Watch> extra_watches_;
  std::list<Conn> conns_;
  std::deque<Conn*> ready_;
};

}  // namespace ik::relay
