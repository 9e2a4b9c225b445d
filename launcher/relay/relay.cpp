#include "relay/relay.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <deque>
#include <list>
#include <optional>
#include <poll.h>

#include "common/fd.hpp"
#include "common/log.hpp"
#include "relay/host_listener.hpp"
#include "relay/jupyter_header.hpp"
#include "relay/kernel_sockets.hpp"
#include "relay/frame_tap.hpp"
#include "relay/zmtp.hpp"

namespace ik::relay {
namespace {

constexpr std::array<const char*, kChannelCount> kNames{"shell", "iopub", "stdin", "control", "hb"};
// Retry interval while a kernel socket file exists but nobody listens: short
// for the gap between bind() and listen() (microseconds in practice), then
// doubling up to libzmq's default reconnect interval, so a stale socket file
// left by a kernel that closed its socket costs no busy polling.
constexpr long kFirstRetryNs = 2'000'000;
constexpr long kMaxRetryNs = 100'000'000;
// Reads per connection per turn, so one busy connection cannot starve the
// others; the rest waits one turn in the ready queue.
constexpr int kTurnBudget = 16;
// Repeated warnings are rate-limited to the 1st, (N+1)th, (2N+1)th, ...
constexpr uint64_t kWarnEvery = 100;
// How long the relay keeps passing on the kernel's last words at exit.
constexpr auto kDrainTime = std::chrono::milliseconds(250);
// How long an iopub client whose kernel side ended is held for the exit
// notice while the relay still runs: the sandbox's exit follows its
// kernel's within milliseconds; a kernel that lives on without that
// connection must not keep the client from reconnecting.
constexpr auto kHoldTime = std::chrono::milliseconds(1000);

int host_port(const ConnectionInfo& host, Channel c) {
  switch (c) {
    case Channel::kShell: return host.shell_port;
    case Channel::kIopub: return host.iopub_port;
    case Channel::kStdin: return host.stdin_port;
    case Channel::kControl: return host.control_port;
    case Channel::kHb: return host.hb_port;
  }
  return 0;
}

int kernel_port(Channel c) {
  switch (c) {
    case Channel::kShell: return KernelIpcPort::kShell;
    case Channel::kIopub: return KernelIpcPort::kIopub;
    case Channel::kStdin: return KernelIpcPort::kStdin;
    case Channel::kControl: return KernelIpcPort::kControl;
    case Channel::kHb: return KernelIpcPort::kHb;
  }
  return 0;
}

constexpr uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP | EPOLLET;

bool rate_limited_turn(uint64_t count) { return count % kWarnEvery == 1; }
void bump(std::atomic<uint64_t>& a, uint64_t by = 1) { a.fetch_add(by, std::memory_order_relaxed); }
uint64_t load(const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); }

// Bytes read from one side and not yet written to the other. Allocated on
// first use, so idle connections cost no buffer.
class ByteQueue {
 public:
  explicit ByteQueue(size_t capacity) : capacity_(capacity) {}
  size_t pending() const { return tail_ - head_; }
  bool full() const { return pending() == capacity_; }
  // Contiguous free space at the end (compacting first if that helps).
  unsigned char* write_area(size_t& n) {
    if (!data_) data_ = std::make_unique<unsigned char[]>(capacity_);
    if (head_ > 0 && tail_ == capacity_) {
      std::memmove(data_.get(), data_.get() + head_, pending());
      tail_ -= head_;
      head_ = 0;
    }
    n = capacity_ - tail_;
    return data_.get() + tail_;
  }
  void commit(size_t n) { tail_ += n; }
  const unsigned char* read_area() const { return data_.get() + head_; }
  void consume(size_t n) {
    head_ += n;
    if (head_ == tail_) head_ = tail_ = 0;
  }
  void clear() { head_ = tail_ = 0; }

 private:
  size_t capacity_;
  std::unique_ptr<unsigned char[]> data_;
  size_t head_ = 0, tail_ = 0;
};

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

}  // namespace

// Epoll user data: what an fd is. Stored in stable places (listeners,
// connections, the fixed list of service fds).
struct Watch {
  enum Kind { kListener, kClient, kKernel, kExtra, kKernelDir, kRetryTimer, kHoldTimer } kind;
  int index = 0;          // channel of a listener; fd of an extra
  struct Conn* conn = nullptr;
};

struct Conn {
  Conn(Channel c, size_t buffer, size_t max_message)
      : channel(c), up(buffer), down(buffer), up_scan(SIZE_MAX), down_scan(max_message) {}
  Channel channel;
  Side client, kernel;
  ByteQueue up, down;           // client -> kernel, kernel -> client
  ZmtpScanner up_scan, down_scan;
  uint64_t up_counted_msgs = 0, up_counted_bytes = 0, down_counted_msgs = 0, down_counted_bytes = 0;
  bool dialled = false;   // kernel side connected
  bool dead = false;      // closed; freed after the current batch
  bool queued = false;    // in the ready queue
  bool held = false;      // iopub: kernel side gone, client kept for the launcher's last notice
  std::chrono::steady_clock::time_point held_since;
  std::unique_ptr<JupyterFrameTap> tap;  // shell: execute_request headers; control: shutdown_reply
  Watch client_watch{Watch::kClient, 0, this};
  Watch kernel_watch{Watch::kKernel, 0, this};
};

namespace {
// A kernel-side error ends that side as EOF does; returns false (done).
bool kernel_failed(Conn& c) {
  c.kernel.eof = true;
  return false;
}
}  // namespace

class Relay::Impl {
 public:
  Impl(RelayOptions o) : options_(o) {}

  Status open(const ConnectionInfo& host, const KernelSocketDir& kernel);
  Status run(const std::vector<int>& extra_fds, const std::function<bool(int)>& on_fd_ready);
  RelayCounters counters() const;
  size_t publish_to_iopub(const std::string& message, std::chrono::milliseconds timeout);
  const std::string& last_execute_header() const { return last_execute_header_; }

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
  void pump(Conn& c);
  void watch_output(Side& s, Watch* w);
  bool step(Conn& c, bool& progress);
  Io read_into(Side& s, ByteQueue& q, size_t& got);
  Io write_from(Side& s, ByteQueue& q);
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
  std::string last_execute_header_;
  bool retry_armed_ = false;
  long retry_ns_ = kFirstRetryNs;
  Watch dir_watch_{Watch::kKernelDir, 0, nullptr};
  Watch timer_watch_{Watch::kRetryTimer, 0, nullptr};
  Watch hold_watch_{Watch::kHoldTimer, 0, nullptr};
  std::deque<Watch> extra_watches_;
  std::list<Conn> conns_;
  std::deque<Conn*> ready_;
};

const char* channel_name(Channel c) { return kNames[static_cast<size_t>(c)]; }

Status Relay::Impl::add(int fd, uint32_t events, Watch* w) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = w;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return sys_error("relay: epoll_ctl(ADD)");
  return ok();
}

Status Relay::Impl::open(const ConnectionInfo& host, const KernelSocketDir& kernel) {
  epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) return sys_error("relay: epoll_create1");
  retry_timer_ = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!retry_timer_.valid()) return sys_error("relay: timerfd_create");
  hold_timer_ = UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!hold_timer_.valid()) return sys_error("relay: timerfd_create");
  auto sockets = KernelSockets::open(kernel.dir_fd, kernel.prefix);
  if (!sockets) return sockets.error();
  kernel_.emplace(std::move(*sockets));
  IK_TRY(add(kernel_->watch_fd(), EPOLLIN, &dir_watch_));
  IK_TRY(add(retry_timer_.get(), EPOLLIN, &timer_watch_));
  IK_TRY(add(hold_timer_.get(), EPOLLIN, &hold_watch_));
  for (size_t i = 0; i < kChannelCount; ++i) {
    const auto c = static_cast<Channel>(i);
    auto l = HostListener::bind(host, host_port(host, c), channel_name(c));
    if (!l) return l.error();
    ChannelState& s = channels_[i];
    s.listener = std::move(*l);
    s.watch.index = static_cast<int>(i);
    IK_TRY(add(s.listener.fd(), EPOLLIN, &s.watch));
    log::step("relay: %s %s <-> %s", channel_name(c), s.listener.address().c_str(),
              kernel_->name(kernel_port(c)).c_str());
  }
  return ok();
}

void Relay::Impl::accept_clients(Channel ch) {
  ChannelState& s = state(ch);
  for (;;) {
    UniqueFd fd = s.listener.accept();
    if (!fd.valid()) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
        log::warn("relay: %s: accept: %s", channel_name(ch), std::strerror(errno));
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;
    }
    if (s.open >= options_.max_connections_per_channel) {
      bump(s.refused);
      if (rate_limited_turn(load(s.refused)))
        log::warn("relay: %s: more than %zu client connections, refused one (%" PRIu64 " so far)",
                  channel_name(ch), options_.max_connections_per_channel, load(s.refused));
      continue;  // closed by UniqueFd
    }
    Conn& c = conns_.emplace_back(ch, options_.buffer_bytes, options_.max_message_bytes);
    c.client.fd = std::move(fd);
    if (ch == Channel::kShell) {
      c.tap = std::make_unique<ExecuteRequestTap>(&last_execute_header_);
      c.up_scan.set_observer(c.tap.get());
    } else if (ch == Channel::kControl && options_.on_shutdown_reply) {
      c.tap = std::make_unique<JupyterFrameTap>(JupyterFrameTap::Part::kHeader, [this](std::string_view header, bool) {
        if (header_msg_type_is(header, "shutdown_reply")) options_.on_shutdown_reply();
      });
      c.down_scan.set_observer(c.tap.get());
    }
    ++s.open;
    bump(s.connections);
    // Edge-triggered, and EPOLLOUT only while a write waits (watch_output):
    // with it always on, every read by the peer would wake us once more.
    if (auto st = add(c.client.fd.get(), kReadEvents, &c.client_watch); !st) {
      log::warn("%s", st.error().describe().c_str());
      close_conn(c, "epoll");
      continue;
    }
    log::step("relay: %s: client connected (%zu open)", channel_name(ch), s.open);
    dial(c);
  }
}

void Relay::Impl::dial(Conn& c) {
  auto out = kernel_->dial(kernel_port(c.channel));
  switch (out.dial) {
    case KernelSockets::Dial::kAbsent:
      return;  // the directory watch calls us again
    case KernelSockets::Dial::kNotListening:
      arm_retry();
      return;
    case KernelSockets::Dial::kRejected: {
      ChannelState& s = state(c.channel);
      bump(s.rejected);
      if (rate_limited_turn(load(s.rejected)))
        log::warn("relay: %s: refused to connect to the kernel's socket: %s", channel_name(c.channel), out.why.c_str());
      close_conn(c, "kernel socket rejected");
      return;
    }
    case KernelSockets::Dial::kConnected:
      break;
  }
  c.kernel.fd = std::move(out.fd);
  if (auto st = add(c.kernel.fd.get(), kReadEvents, &c.kernel_watch); !st) {
    log::warn("%s", st.error().describe().c_str());
    close_conn(c, "epoll");
    return;
  }
  c.dialled = true;
  retry_ns_ = kFirstRetryNs;
  log::step("relay: %s: joined a client to the kernel", channel_name(c.channel));
  pump(c);  // the client's greeting may be waiting
}

void Relay::Impl::redial_waiting() {
  for (Conn& c : conns_)
    if (!c.dead && !c.dialled) dial(c);
}

void Relay::Impl::arm_retry() {
  if (retry_armed_) return;
  itimerspec t{};
  t.it_value.tv_nsec = retry_ns_;
  if (::timerfd_settime(retry_timer_.get(), 0, &t, nullptr) == 0) retry_armed_ = true;
  retry_ns_ = std::min(2 * retry_ns_, kMaxRetryNs);
}

Io Relay::Impl::read_into(Side& s, ByteQueue& q, size_t& got) {
  size_t room = 0;
  unsigned char* p = q.write_area(room);
  got = 0;
  const ssize_t n = ::recv(s.fd.get(), p, room, MSG_DONTWAIT);
  if (n > 0) {
    got = static_cast<size_t>(n);
    // A short read means the socket is empty now; the next edge says more.
    if (got < room) s.readable = false;
    return Io::kDone;
  }
  if (n == 0) {
    s.eof = true;
    s.readable = false;
    return Io::kEof;
  }
  if (errno == EAGAIN || errno == EINTR) {
    s.readable = errno == EINTR;
    return Io::kAgain;
  }
  return Io::kError;
}

Io Relay::Impl::write_from(Side& s, ByteQueue& q) {
  // MSG_NOSIGNAL: a vanished peer is an error to handle, not a SIGPIPE.
  const ssize_t n = ::send(s.fd.get(), q.read_area(), q.pending(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n >= 0) {
    if (static_cast<size_t>(n) < q.pending()) s.writable = false;
    q.consume(static_cast<size_t>(n));
    return Io::kDone;
  }
  if (errno == EAGAIN || errno == EINTR) {
    s.writable = errno == EINTR;
    return Io::kAgain;
  }
  return Io::kError;
}

// Checks the kernel's bytes before they go anywhere; false = cut.
bool Relay::Impl::scan_kernel_bytes(Conn& c, const unsigned char* p, size_t n) {
  const auto v = c.down_scan.feed(p, n);
  if (v == ZmtpScanner::Verdict::kOk) return true;
  ChannelState& s = state(c.channel);
  auto& counter = v == ZmtpScanner::Verdict::kOversized ? s.oversized : s.protocol_errors;
  bump(counter);
  if (rate_limited_turn(load(counter))) {
    if (v == ZmtpScanner::Verdict::kOversized)
      log::warn("relay: %s: the kernel sent %s (limit %zu, --max-message-size); cut that client connection "
                "(%" PRIu64 " so far)",
                channel_name(c.channel), c.down_scan.reason().c_str(), options_.max_message_bytes, load(counter));
    else
      log::warn("relay: %s: the kernel broke the ZeroMQ protocol (%s); cut that client connection (%" PRIu64
                " so far)",
                channel_name(c.channel), c.down_scan.reason().c_str(), load(counter));
  }
  return false;
}

// Client bytes are only counted: clients are trusted, and the kernel's own
// libzmq judges what they send.
void Relay::Impl::scan_client_bytes(Conn& c, const unsigned char* p, size_t n) {
  if (c.up_scan.verdict() == ZmtpScanner::Verdict::kOk) c.up_scan.feed(p, n);
}

void Relay::Impl::flush_counts(Conn& c) {
  ChannelState& s = state(c.channel);
  bump(s.to_kernel.messages, c.up_scan.messages() - c.up_counted_msgs);
  bump(s.to_kernel.bytes, c.up_scan.payload_bytes() - c.up_counted_bytes);
  bump(s.to_host.messages, c.down_scan.messages() - c.down_counted_msgs);
  bump(s.to_host.bytes, c.down_scan.payload_bytes() - c.down_counted_bytes);
  c.up_counted_msgs = c.up_scan.messages();
  c.up_counted_bytes = c.up_scan.payload_bytes();
  c.down_counted_msgs = c.down_scan.messages();
  c.down_counted_bytes = c.down_scan.payload_bytes();
}

// One round of moving bytes both ways; false when the connection is done.
bool Relay::Impl::step(Conn& c, bool& progress) {
  size_t got = 0;
  // client -> kernel
  if (c.client.readable && !c.client.eof && !c.up.full()) {
    const Io r = read_into(c.client, c.up, got);
    if (r == Io::kError) return false;
    if (got) {
      scan_client_bytes(c, c.up.read_area() + c.up.pending(), got);
      c.up.commit(got);
      progress = true;
    }
  }
  // A kernel-side error ends that side as EOF does (the iopub client may
  // then be held for the exit notice, see hold_for_notice).
  if (c.dialled && c.kernel.writable && c.up.pending()) {
    const size_t before = c.up.pending();
    if (write_from(c.kernel, c.up) == Io::kError) return kernel_failed(c);
    progress |= c.up.pending() != before;
  }
  // kernel -> client
  if (c.dialled && c.kernel.readable && !c.kernel.eof && !c.down.full()) {
    const Io r = read_into(c.kernel, c.down, got);
    if (r == Io::kError) return kernel_failed(c);
    if (got) {
      if (!scan_kernel_bytes(c, c.down.read_area() + c.down.pending(), got)) return false;
      c.down.commit(got);
      progress = true;
    }
  }
  if (c.client.writable && c.down.pending()) {
    const size_t before = c.down.pending();
    if (write_from(c.client, c.down) == Io::kError) return false;
    progress |= c.down.pending() != before;
  }
  // A side that closed is done once what it sent has been passed on; ZMTP
  // has no use for half-open connections. A client gone before the kernel
  // is there needs nothing passed on.
  if (c.client.eof && (c.up.pending() == 0 || !c.dialled)) return false;
  if (c.kernel.eof && c.down.pending() == 0) return false;
  return true;
}

// EPOLLOUT is wanted exactly while a side cannot take what is pending for
// it. Small messages never need it: their send() completes at once.
void Relay::Impl::watch_output(Side& s, Watch* w) {
  const bool want = !s.writable;
  if (!s.fd.valid() || want == s.out_armed) return;
  epoll_event ev{};
  ev.events = kReadEvents | (want ? static_cast<uint32_t>(EPOLLOUT) : 0u);
  ev.data.ptr = w;
  // Re-arming re-checks readiness: a socket writable by now reports at once.
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, s.fd.get(), &ev) == 0) s.out_armed = want;
}

void Relay::Impl::pump(Conn& c) {
  if (c.dead || c.held) return;
  for (int turn = 0; turn < kTurnBudget; ++turn) {
    bool progress = false;
    const bool alive = step(c, progress);
    flush_counts(c);
    if (!alive) {
      end_conn(c, c.kernel.eof ? "kernel side closed" : "client side closed");
      return;
    }
    if (!progress) {
      watch_output(c.client, &c.client_watch);
      if (c.dialled) watch_output(c.kernel, &c.kernel_watch);
      return;
    }
  }
  watch_output(c.client, &c.client_watch);
  if (c.dialled) watch_output(c.kernel, &c.kernel_watch);
  // Still busy: let the other connections have a turn first.
  if (!c.queued) {
    c.queued = true;
    ready_.push_back(&c);
  }
}

void Relay::Impl::close_conn(Conn& c, const char* why) {
  if (c.dead) return;
  c.dead = true;
  ChannelState& s = state(c.channel);
  --s.open;
  log::step("relay: %s: connection closed (%s), %zu open", channel_name(c.channel), why, s.open);
  // Closing removes the fds from the epoll set; events already returned for
  // them in this batch are skipped through `dead`.
  c.client.fd.reset();
  c.kernel.fd.reset();
  c.up.clear();
  c.down.clear();
}

// An iopub client whose kernel side ended cleanly between two messages is
// kept (out of the epoll set, its input unread) so the launcher can tell it
// why the kernel died; the others are closed.
bool Relay::Impl::hold_for_notice(Conn& c) {
  if (c.channel != Channel::kIopub || !c.dialled || c.client.eof || !c.client.fd.valid() || c.down.pending() ||
      !c.down_scan.at_message_boundary())
    return false;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.client.fd.get(), nullptr);
  c.kernel.fd.reset();
  c.up.clear();
  c.held = true;
  c.held_since = std::chrono::steady_clock::now();
  // Armed only when idle: re-arming at every hold would let a kernel that
  // drops a connection more often than kHoldTime keep older holds forever.
  // A running timer ends at or before this hold's time; release_held()
  // re-arms it for the holds still waiting.
  itimerspec cur{};
  if (::timerfd_gettime(hold_timer_.get(), &cur) == 0 && cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0) {
    itimerspec t{};
    t.it_value.tv_nsec = std::chrono::duration_cast<std::chrono::nanoseconds>(kHoldTime).count() % 1'000'000'000;
    t.it_value.tv_sec = std::chrono::duration_cast<std::chrono::seconds>(kHoldTime).count();
    ::timerfd_settime(hold_timer_.get(), 0, &t, nullptr);
  }
  log::step("relay: iopub: kernel side closed, client kept for the exit notice");
  return true;
}

// The relay still runs kHoldTime after a hold: the kernel lives on, so the
// held clients are closed (their libzmq reconnects as after any cut).
void Relay::Impl::release_held() {
  uint64_t expirations;
  while (::read(hold_timer_.get(), &expirations, sizeof expirations) > 0) {
  }
  const auto now = std::chrono::steady_clock::now();
  bool more = false;
  for (Conn& c : conns_) {
    if (!c.held || c.dead) continue;
    if (now - c.held_since < kHoldTime) {
      more = true;
      continue;
    }
    c.held = false;
    close_conn(c, "kernel side closed, the kernel lives on");
  }
  if (!more) return;
  itimerspec t{};
  t.it_value.tv_nsec = 100'000'000;  // the newer holds: checked again soon
  ::timerfd_settime(hold_timer_.get(), 0, &t, nullptr);
}

void Relay::Impl::end_conn(Conn& c, const char* why) {
  if (!c.kernel.eof || !hold_for_notice(c)) close_conn(c, why);
}

void Relay::Impl::reap() {
  for (auto it = conns_.begin(); it != conns_.end();)
    it = (it->dead && !it->queued) ? conns_.erase(it) : std::next(it);
}

Status Relay::Impl::run(const std::vector<int>& extra_fds, const std::function<bool(int)>& on_fd_ready) {
  for (int fd : extra_fds) {
    Watch& w = extra_watches_.emplace_back(Watch{Watch::kExtra, fd, nullptr});
    IK_TRY(add(fd, EPOLLIN, &w));
  }
  // Sockets may already have been waiting before run() (a client that
  // connected first): accept them now.
  for (size_t i = 0; i < kChannelCount; ++i) accept_clients(static_cast<Channel>(i));
  std::array<epoll_event, 64> events;
  for (;;) {
    // No timeout when idle: an idle relay sleeps in the kernel.
    const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), ready_.empty() ? -1 : 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("relay: epoll_wait");
    }
    // Extra fds first: an interrupt sent before shutdown_request must reach
    // the kernel before the message does.
    for (int i = 0; i < n; ++i) {
      auto* w = static_cast<Watch*>(events[i].data.ptr);
      if (w->kind != Watch::kExtra || on_fd_ready(w->index)) continue;
      drain_at_exit();
      return ok();
    }
    for (int i = 0; i < n; ++i) {
      auto* w = static_cast<Watch*>(events[i].data.ptr);
      const uint32_t ev = events[i].events;
      switch (w->kind) {
        case Watch::kExtra: break;
        case Watch::kListener: accept_clients(static_cast<Channel>(w->index)); break;
        case Watch::kKernelDir:
          kernel_->drain_watch();
          retry_ns_ = kFirstRetryNs;  // something changed: try again quickly
          redial_waiting();
          break;
        case Watch::kRetryTimer: {
          uint64_t expirations;
          while (::read(retry_timer_.get(), &expirations, sizeof expirations) > 0) {
          }
          retry_armed_ = false;
          redial_waiting();
          break;
        }
        case Watch::kHoldTimer: release_held(); break;
        case Watch::kClient:
        case Watch::kKernel: {
          Conn& c = *w->conn;
          if (c.dead) break;
          Side& side = w->kind == Watch::kClient ? c.client : c.kernel;
          // Hang-up and error still leave data to read; the read says EOF.
          if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) side.readable = true;
          if (ev & EPOLLOUT) side.writable = true;
          pump(c);
          break;
        }
      }
    }
    // Connections that used up their turn go on where they stopped.
    for (size_t k = ready_.size(); k > 0; --k) {
      Conn* c = ready_.front();
      ready_.pop_front();
      c->queued = false;
      pump(*c);
    }
    reap();
  }
}

// The kernel has exited: pass on what it wrote before (a shutdown_reply, the
// last iopub status) to clients that can take it, within kDrainTime.
void Relay::Impl::drain_at_exit() {
  const auto deadline = std::chrono::steady_clock::now() + kDrainTime;
  for (Conn& c : conns_) {
    if (c.dead || c.held || !c.dialled) continue;
    c.kernel.readable = true;
    c.up.clear();  // nothing more goes to a kernel that is gone
  }
  for (;;) {
    bool waiting = false;
    for (Conn& c : conns_) {
      if (c.dead || c.held || !c.dialled) continue;
      bool progress = true;
      for (int k = 0; k < 64 && progress && !c.dead && !c.held; ++k) {
        progress = false;
        if (!step(c, progress)) end_conn(c, "kernel exited");
      }
      flush_counts(c);
      if (!c.dead && !c.held && c.down.pending()) waiting = true;
    }
    const auto now = std::chrono::steady_clock::now();
    if (!waiting || now >= deadline) return;
    // Wait only for clients that have data pending (not the epoll set:
    // the exited sandbox's pidfd would stay readable and spin).
    std::vector<pollfd> fds;
    std::vector<Conn*> owners;
    for (Conn& c : conns_) {
      if (c.dead || c.held || !c.down.pending()) continue;
      fds.push_back({c.client.fd.get(), POLLOUT, 0});
      owners.push_back(&c);
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    if (::poll(fds.data(), fds.size(), static_cast<int>(left) + 1) <= 0) return;
    for (size_t i = 0; i < fds.size(); ++i)
      if (fds[i].revents) owners[i]->client.writable = true;
  }
}

size_t Relay::Impl::publish_to_iopub(const std::string& message, std::chrono::milliseconds timeout) {
  struct Target {
    Conn* c;
    size_t sent = 0;
  };
  std::vector<Target> targets;
  for (Conn& c : conns_) {
    if (c.channel != Channel::kIopub || c.dead || !c.client.fd.valid()) continue;
    if (c.held || (c.dialled && c.down.pending() == 0 && c.down_scan.at_message_boundary())) targets.push_back({&c});
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t done = 0;
  while (!targets.empty()) {
    std::vector<pollfd> fds;
    for (auto it = targets.begin(); it != targets.end();) {
      const ssize_t n = ::send(it->c->client.fd.get(), message.data() + it->sent, message.size() - it->sent,
                               MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) it->sent += static_cast<size_t>(n);
      if (it->sent == message.size()) ++done;
      if (it->sent == message.size() || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        it = targets.erase(it);
        continue;
      }
      fds.push_back({it->c->client.fd.get(), POLLOUT, 0});
      ++it;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (targets.empty() || left.count() <= 0) break;
    if (::poll(fds.data(), fds.size(), static_cast<int>(left.count()) + 1) < 0 && errno != EINTR) break;
  }
  // A client that took part of it would see a broken message: cut it.
  for (Target& t : targets)
    if (t.sent) close_conn(*t.c, "exit notice not taken in time");
  return done;
}

RelayCounters Relay::Impl::counters() const {
  RelayCounters out;
  for (size_t i = 0; i < kChannelCount; ++i) {
    const ChannelState& s = channels_[i];
    ChannelCounters& c = out.channels[i];
    c.connections = load(s.connections);
    c.refused_connections = load(s.refused);
    c.to_kernel = {load(s.to_kernel.messages), load(s.to_kernel.bytes)};
    c.to_host = {load(s.to_host.messages), load(s.to_host.bytes)};
    c.oversized = load(s.oversized);
    c.protocol_errors = load(s.protocol_errors);
    c.rejected_sockets = load(s.rejected);
  }
  return out;
}

Relay::Relay(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Relay::~Relay() = default;

Result<std::unique_ptr<Relay>> Relay::create(const ConnectionInfo& host, const KernelSocketDir& kernel,
                                             RelayOptions options) {
  if (options.max_message_bytes == 0) return usage_error("relay: max_message_bytes must be > 0");
  if (options.buffer_bytes < 4096) return usage_error("relay: buffer_bytes must be >= 4096");
  if (options.max_connections_per_channel == 0) return usage_error("relay: max_connections_per_channel must be > 0");
  auto impl = std::make_unique<Impl>(options);
  IK_TRY(impl->open(host, kernel));
  log::step("relay: host %s://%s ports %d/%d/%d/%d/%d <-> kernel sockets %s-1..5", host.transport.c_str(),
            host.ip.c_str(), host.shell_port, host.iopub_port, host.stdin_port, host.control_port, host.hb_port,
            kernel.prefix.c_str());
  return std::unique_ptr<Relay>(new Relay(std::move(impl)));
}

Status Relay::run(const std::vector<int>& extra_fds, const std::function<bool(int fd)>& on_fd_ready) {
  return impl_->run(extra_fds, on_fd_ready);
}

RelayCounters Relay::counters() const { return impl_->counters(); }

const std::string& Relay::last_execute_header() const { return impl_->last_execute_header(); }

size_t Relay::publish_to_iopub(const std::string& message, std::chrono::milliseconds timeout) {
  return impl_->publish_to_iopub(message, timeout);
}

std::string Relay::describe_counters() const {
  const RelayCounters all = counters();
  std::string out;
  char buf[400];
  for (size_t i = 0; i < kChannelCount; ++i) {
    const ChannelCounters& c = all.channels[i];
    if (!c.connections && !c.refused_connections && !c.rejected_sockets) continue;
    std::snprintf(buf, sizeof buf,
                  "%s%s: %" PRIu64 " connections (%" PRIu64 " refused), to kernel %" PRIu64 " msg %" PRIu64
                  " B, to host %" PRIu64 " msg %" PRIu64 " B, cut %" PRIu64 " oversized + %" PRIu64
                  " malformed, %" PRIu64 " kernel sockets rejected",
                  out.empty() ? "" : "\n", kNames[i], c.connections, c.refused_connections, c.to_kernel.messages,
                  c.to_kernel.bytes, c.to_host.messages, c.to_host.bytes, c.oversized, c.protocol_errors,
                  c.rejected_sockets);
    out += buf;
  }
  return out.empty() ? "no traffic" : out;
}

}  // namespace ik::relay
