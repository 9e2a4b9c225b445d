#include "relay/relay.hpp"

#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstring>

#include "common/fd.hpp"
#include "common/log.hpp"
#include "relay/execute_tap.hpp"
#include "relay/jupyter_header.hpp"
#include "relay/relay_impl.hpp"
#include "relay/prebound.hpp"

namespace ik::relay {
namespace {

constexpr uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP | EPOLLET;

bool rate_limited_turn(uint64_t count) { return count % kWarnEvery == 1; }
void bump(std::atomic<uint64_t>& a, uint64_t by = 1) { a.fetch_add(by, std::memory_order_relaxed); }
uint64_t load(const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); }

// A kernel-side error ends that side as EOF does; returns false (done).
bool kernel_failed(Conn& c) {
  c.kernel.eof = true;
  return false;
}
}  // namespace

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
  // To check the signatures of execute_requests (relay/execute_tap.hpp).
  key_ = host.key;
  signature_scheme_ = host.signature_scheme;
  auto sockets = KernelSockets::open(kernel.dir_fd, kernel.prefix);
  if (!sockets) return sockets.error();
  kernel_.emplace(std::move(*sockets));
  IK_TRY(add(kernel_->watch_fd(), EPOLLIN, &dir_watch_));
  IK_TRY(add(retry_timer_.get(), EPOLLIN, &timer_watch_));
  IK_TRY(add(hold_timer_.get(), EPOLLIN, &hold_watch_));
  for (size_t i = 0; i < kChannelCount; ++i) {
    const auto c = static_cast<Channel>(i);
    ChannelState& s = channels_[i];
    if (auto pre = options_.prebound ? options_.prebound->take(c) : std::nullopt) {
      s.listener = std::move(*pre);
    } else {
      auto l = HostListener::bind(host, host_port(host, c), channel_name(c));
      if (!l) return l.error();
      s.listener = std::move(*l);
    }
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
        log::warn("relay: %s: more than %zu client connections, refused one (%" PRIu64 " so far)", channel_name(ch),
                  options_.max_connections_per_channel, load(s.refused));
      continue;  // closed by UniqueFd
    }
    Conn& c = conns_.emplace_back(ch, options_.buffer_bytes, options_.max_message_bytes);
    c.client.fd = std::move(fd);
    if (ch == Channel::kShell) {
      c.tap = std::make_unique<ExecuteRequestTap>(&last_execute_header_, key_, signature_scheme_);
      c.up_scan.set_observer(c.tap.get());
    } else if (ch == Channel::kControl) {
      // A signed shutdown_request passed on: the kernel's reply may die with
      // it in its teardown, unsent (apply/shutdown_watch.hpp).
      c.request_tap =
          std::make_unique<ExecuteRequestTap>(&last_shutdown_request_, key_, signature_scheme_, "shutdown_request");
      c.up_scan.set_observer(c.request_tap.get());
      if (options_.on_shutdown_reply) {
        c.tap =
            std::make_unique<JupyterFrameTap>(JupyterFrameTap::Part::kHeader, [this](std::string_view header, bool) {
              if (header_msg_type_is(header, "shutdown_reply")) options_.on_shutdown_reply();
            });
        c.down_scan.set_observer(c.tap.get());
      }
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
    case KernelSockets::Dial::kAbsent: return;  // the directory watch calls us again
    case KernelSockets::Dial::kNotListening: arm_retry(); return;
    case KernelSockets::Dial::kRejected: {
      ChannelState& s = state(c.channel);
      bump(s.rejected);
      if (rate_limited_turn(load(s.rejected)))
        log::warn("relay: %s: refused to connect to the kernel's socket: %s", channel_name(c.channel), out.why.c_str());
      close_conn(c, "kernel socket rejected");
      return;
    }
    case KernelSockets::Dial::kConnected: break;
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
  // Nothing waits for a socket file any more: the watch goes now, not in
  // the close at our exit (kernel_sockets.hpp, unwatch()).
  if (std::none_of(conns_.begin(), conns_.end(), [](const Conn& o) { return !o.dead && !o.dialled; }))
    kernel_->unwatch();
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
      log::warn("relay: %s: the kernel broke the ZeroMQ protocol (%s); cut that client connection (%" PRIu64 " so far)",
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

// Moves bytes both ways for at most `budget` rounds. A connection that
// ends is closed (or held) with `end_why`, by default the side that closed.
void Relay::Impl::pump(Conn& c, int budget, const char* end_why) {
  if (c.dead || c.held) return;
  for (int turn = 0; turn < budget; ++turn) {
    bool progress = false;
    const bool alive = step(c, progress);
    flush_counts(c);
    if (!alive) {
      end_conn(c, end_why ? end_why : c.kernel.eof ? "kernel side closed" : "client side closed");
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

void Relay::Impl::end_conn(Conn& c, const char* why) {
  if (!c.kernel.eof || !hold_for_notice(c)) close_conn(c, why);
}

void Relay::Impl::reap() {
  for (auto it = conns_.begin(); it != conns_.end();) it = (it->dead && !it->queued) ? conns_.erase(it) : std::next(it);
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

bool Relay::shutdown_requested() const { return impl_->shutdown_requested(); }

size_t Relay::publish_to_iopub(const std::string& message, std::chrono::milliseconds timeout) {
  return impl_->publish_to_iopub(message, timeout);
}

std::string Relay::describe_counters() const { return ik::relay::describe_counters(counters()); }

}  // namespace ik::relay
