#include "relay/relay.hpp"

#include <sys/un.h>

#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <utility>

#include "common/log.hpp"

namespace ik::relay {
namespace {

// Messages handled per socket per wake-up, so one busy channel cannot
// starve the others (zmq_poll is level-triggered: the rest waits one turn).
constexpr int kBatch = 64;
// Each frame costs libzmq about this much besides its payload; counting it
// stops a flood of empty frames from slipping under the size cap.
constexpr size_t kFrameCost = 64;
// Short so start-up does not wait libzmq's default 100 ms for the kernel to
// bind its ipc sockets.
constexpr int kReconnectIvlMs = 5;
// Repeated warnings are rate-limited to the 1st, (N+1)th, (2N+1)th, ...
constexpr uint64_t kWarnEvery = 100;
// Bound on remembered client ids per channel (-v logging only).
constexpr size_t kMaxTrackedClients = 256;
// Poll items per channel: host socket, kernel socket, kernel-link monitor.
constexpr size_t kItemsPerLink = 3;

constexpr std::array<const char*, kChannelCount> kNames{"shell", "iopub", "stdin", "control", "hb"};

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

bool rate_limited_turn(uint64_t count) { return count % kWarnEvery == 1; }

// Printable ids (jupyter_client uses its session uuid) are shown as text,
// others (libzmq's generated ids start with a zero byte) as hex.
std::string printable_id(const zmq::message_t& m) {
  const auto* p = static_cast<const unsigned char*>(m.data());
  const size_t n = m.size();
  bool text = n > 0 && n <= 64;
  for (size_t i = 0; text && i < n; ++i) text = std::isprint(p[i]) != 0;
  if (text) return "\"" + std::string(reinterpret_cast<const char*>(p), n) + "\"";
  std::string hex = "0x";
  char b[3];
  for (size_t i = 0; i < n && i < 16; ++i) {
    std::snprintf(b, sizeof b, "%02x", p[i]);
    hex += b;
  }
  return n > 16 ? hex + "..." : hex;
}

// Random per relay; the first byte is printable (a leading zero byte is
// reserved by libzmq for generated ids).
std::string random_routing_id() {
  std::random_device rd;
  char buf[32];
  std::snprintf(buf, sizeof buf, "ik-relay-%08x%08x", rd(), rd());
  return buf;
}

template <typename T>
Status set_opt(zmq::socket_t& s, int option, T value, const char* what) {
  if (zmq_setsockopt(s.handle(), option, &value, sizeof value) != 0)
    return sys_error(std::string("relay: set ") + what);
  return ok();
}

Status set_common_options(zmq::socket_t& s, const RelayOptions& o) {
  // Linger 0: at exit nothing may hold the launcher up on an absent peer.
  IK_TRY(set_opt<int>(s, ZMQ_LINGER, 0, "ZMQ_LINGER"));
  IK_TRY(set_opt<int>(s, ZMQ_SNDHWM, o.high_water_mark, "ZMQ_SNDHWM"));
  IK_TRY(set_opt<int>(s, ZMQ_RCVHWM, o.high_water_mark, "ZMQ_RCVHWM"));
  return ok();
}

Status set_host_options(zmq::socket_t& s, Channel c, bool ipv6) {
  if (ipv6) IK_TRY(set_opt<int>(s, ZMQ_IPV6, 1, "ZMQ_IPV6"));
  if (c == Channel::kIopub) {
    // Verbose: every subscription reaches the kernel, not only the first
    // per topic (kernels may greet each new subscriber).
    return set_opt<int>(s, ZMQ_XPUB_VERBOSE, 1, "ZMQ_XPUB_VERBOSE");
  }
  // Mandatory: a message to a vanished client fails (and is counted) instead
  // of vanishing silently, and a full client queue gives EAGAIN.
  IK_TRY(set_opt<int>(s, ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY"));
  if (c != Channel::kHb) {
    // As ipykernel does on these sockets: a client reconnecting with its
    // old identity takes it over (ipython/ipykernel#270).
    IK_TRY(set_opt<int>(s, ZMQ_ROUTER_HANDOVER, 1, "ZMQ_ROUTER_HANDOVER"));
  }
  return ok();
}

Status set_kernel_options(zmq::socket_t& s, Channel c, const RelayOptions& o, const std::string& id) {
  IK_TRY(set_opt<int>(s, ZMQ_RECONNECT_IVL, kReconnectIvlMs, "ZMQ_RECONNECT_IVL"));
  const int64_t max = o.max_message_bytes > static_cast<size_t>(std::numeric_limits<int64_t>::max())
                          ? -1
                          : static_cast<int64_t>(o.max_message_bytes);
  IK_TRY(set_opt<int64_t>(s, ZMQ_MAXMSGSIZE, max, "ZMQ_MAXMSGSIZE"));
  if (c == Channel::kIopub) return ok();
  // One id on every DEALER: ipykernel sends stdin requests to the identity
  // it saw on shell, so shell and stdin must match or input() hangs.
  if (zmq_setsockopt(s.handle(), ZMQ_ROUTING_ID, id.data(), id.size()) != 0)
    return sys_error("relay: set ZMQ_ROUTING_ID");
  return ok();
}

Status check_ipc_base(const std::string& base) {
  // "<base>-N" must fit in sockaddr_un.sun_path with its terminating NUL.
  constexpr size_t kMax = sizeof(sockaddr_un{}.sun_path) - 1;
  if (base.empty()) return usage_error("relay: the kernel ipc path is empty");
  if (base.size() + 2 > kMax)
    return usage_error("relay: kernel ipc path " + base + " is too long",
                       "unix socket paths are limited to " + std::to_string(kMax) + " bytes");
  return ok();
}

enum class Received { kNone, kMessage, kOversized };

// Reads one whole multipart message (libzmq delivers them atomically, so
// once the first frame is there all are). Frames beyond `limit` are read
// and discarded at once, so an oversized message never piles up here.
Result<Received> recv_message(zmq::socket_t& s, std::vector<zmq::message_t>& frames, size_t& bytes,
                              size_t limit) {
  frames.clear();
  bytes = 0;
  size_t cost = 0;
  bool oversized = false;
  for (bool first = true;; first = false) {
    zmq::message_t m;
    if (zmq_msg_recv(m.handle(), s.handle(), first ? ZMQ_DONTWAIT : 0) < 0) {
      if (first && errno == EAGAIN) return Received::kNone;
      return sys_error("relay: receive");
    }
    const bool more = m.more();
    bytes += m.size();
    cost += m.size() + kFrameCost;
    if (cost > limit && !oversized) {
      oversized = true;
      frames.clear();
    }
    if (!oversized) frames.push_back(std::move(m));
    if (!more) return oversized ? Received::kOversized : Received::kMessage;
  }
}

// Sends all frames without blocking; false when the message was dropped
// (peer queue full, or a ROUTER's client is gone).
bool send_message(zmq::socket_t& s, std::vector<zmq::message_t>& frames) {
  for (size_t i = 0; i < frames.size(); ++i) {
    const int flags = ZMQ_DONTWAIT | (i + 1 < frames.size() ? ZMQ_SNDMORE : 0);
    if (zmq_msg_send(frames[i].handle(), s.handle(), flags) >= 0) continue;
    if (i == 0) return false;
    // Failed mid-message: still end it, so libzmq discards it as a whole
    // instead of gluing the next message onto its tail.
    for (++i; i < frames.size(); ++i)
      zmq_msg_send(frames[i].handle(), s.handle(), ZMQ_DONTWAIT | (i + 1 < frames.size() ? ZMQ_SNDMORE : 0));
    return false;
  }
  return true;
}

void bump(std::atomic<uint64_t>& a, uint64_t by = 1) { a.fetch_add(by, std::memory_order_relaxed); }
uint64_t load(const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); }

bool any_activity(const ChannelCounters& c) {
  return c.to_kernel.messages || c.to_kernel.dropped || c.to_host.messages || c.to_host.dropped ||
         c.oversized || c.kernel_link_resets;
}

}  // namespace

const char* channel_name(Channel c) { return kNames[static_cast<size_t>(c)]; }

Relay::Relay(RelayOptions options, std::string routing_id)
    : options_(options), routing_id_(std::move(routing_id)) {}

Relay::~Relay() = default;

Result<std::unique_ptr<Relay>> Relay::create(zmq::context_t& ctx, const ConnectionInfo& host,
                                             const std::string& kernel_ipc_base, RelayOptions options) {
  if (options.max_message_bytes == 0) return usage_error("relay: max_message_bytes must be > 0");
  if (options.high_water_mark < 0) return usage_error("relay: high_water_mark must be >= 0");
  IK_TRY(check_ipc_base(kernel_ipc_base));

  std::unique_ptr<Relay> relay(new Relay(options, random_routing_id()));
  // libzmq needs ZMQ_IPV6 to bind an IPv6 address such as "::1".
  const bool ipv6 = host.transport == "tcp" && host.ip.find(':') != std::string::npos;
  for (size_t i = 0; i < kChannelCount; ++i) {
    const auto c = static_cast<Channel>(i);
    const std::string kernel_ep = "ipc://" + kernel_ipc_base + "-" + std::to_string(kernel_port(c));
    IK_TRY(relay->open_link(ctx, c, host.endpoint(host_port(host, c)), kernel_ep, ipv6));
  }
  log::step("relay: host %s://%s ports %d/%d/%d/%d/%d <-> ipc://%s-1..5, routing id %s",
            host.transport.c_str(), host.ip.c_str(), host.shell_port, host.iopub_port, host.stdin_port,
            host.control_port, host.hb_port, kernel_ipc_base.c_str(), relay->routing_id_.c_str());
  return relay;
}

Status Relay::open_link(zmq::context_t& ctx, Channel c, const std::string& host_endpoint,
                        const std::string& kernel_endpoint, bool ipv6) {
  const bool pubsub = c == Channel::kIopub;
  auto link = std::make_unique<Link>();
  link->channel = c;
  try {
    link->host = zmq::socket_t(ctx, pubsub ? zmq::socket_type::xpub : zmq::socket_type::router);
    link->kernel = zmq::socket_t(ctx, pubsub ? zmq::socket_type::xsub : zmq::socket_type::dealer);
  } catch (const zmq::error_t& e) {
    return sys_error(std::string("relay: create the ") + channel_name(c) + " sockets", e.num());
  }
  IK_TRY(set_common_options(link->host, options_));
  IK_TRY(set_host_options(link->host, c, ipv6));
  IK_TRY(set_common_options(link->kernel, options_));
  IK_TRY(set_kernel_options(link->kernel, c, options_, routing_id_));

  if (zmq_bind(link->host.handle(), host_endpoint.c_str()) != 0) {
    const int e = errno;
    return sys_error(std::string("relay: bind the ") + channel_name(c) + " channel at " + host_endpoint, e,
                     e == EADDRINUSE ? "another process already uses that port" : "");
  }
  // Asynchronous: succeeds before the kernel has bound; libzmq retries.
  link->kernel_endpoint = kernel_endpoint;
  if (zmq_connect(link->kernel.handle(), kernel_endpoint.c_str()) != 0)
    return sys_error(std::string("relay: connect the ") + channel_name(c) + " channel to " + kernel_endpoint);
  IK_TRY(watch_kernel_link(ctx, *link));
  log::step("relay: %s %s <-> %s", channel_name(c), host_endpoint.c_str(), kernel_endpoint.c_str());
  links_[static_cast<size_t>(c)] = std::move(link);
  return ok();
}

// libzmq ends a connection for good (no automatic reconnect) when the peer
// breaks the protocol, which includes a frame over ZMQ_MAXMSGSIZE. A monitor
// tells us about every lost kernel-side link so we can reconnect it.
Status Relay::watch_kernel_link(zmq::context_t& ctx, Link& link) {
  const std::string addr = "inproc://" + routing_id_ + "-monitor-" + channel_name(link.channel);
  if (zmq_socket_monitor(link.kernel.handle(), addr.c_str(), ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0)
    return sys_error(std::string("relay: monitor the ") + channel_name(link.channel) + " channel");
  try {
    link.monitor = zmq::socket_t(ctx, zmq::socket_type::pair);
  } catch (const zmq::error_t& e) {
    return sys_error("relay: create a monitor socket", e.num());
  }
  IK_TRY(set_opt<int>(link.monitor, ZMQ_LINGER, 0, "ZMQ_LINGER"));
  if (zmq_connect(link.monitor.handle(), addr.c_str()) != 0) return sys_error("relay: connect " + addr);
  return ok();
}

Status Relay::handle_link_event(Link& link) {
  for (;;) {
    // Two frames: 6 bytes (uint16 event, uint32 value), then the address.
    zmq::message_t head, addr;
    if (zmq_msg_recv(head.handle(), link.monitor.handle(), ZMQ_DONTWAIT) < 0) {
      if (errno == EAGAIN) return ok();
      return sys_error("relay: receive a monitor event");
    }
    if (head.more() && zmq_msg_recv(addr.handle(), link.monitor.handle(), 0) < 0)
      return sys_error("relay: receive a monitor event");
    uint16_t event = 0;
    if (head.size() >= sizeof event) std::memcpy(&event, head.data(), sizeof event);
    const char* name = channel_name(link.channel);
    if (event == ZMQ_EVENT_CONNECTED) {
      log::step("relay: %s: kernel side connected", name);
      continue;
    }
    if (event != ZMQ_EVENT_DISCONNECTED) continue;
    // Reconnecting an endpoint whose session is still retrying on its own
    // is harmless (it is replaced); one that libzmq gave up on needs it.
    bump(link.resets);
    log::step("relay: %s: kernel side disconnected, reconnecting", name);
    const char* ep = link.kernel_endpoint.c_str();
    zmq_disconnect(link.kernel.handle(), ep);  // ENOENT is fine: already gone
    if (zmq_connect(link.kernel.handle(), ep) != 0)
      return sys_error(std::string("relay: reconnect the ") + name + " channel to " + ep);
  }
}

Status Relay::run(const std::vector<int>& extra_fds, const std::function<bool(int fd)>& on_fd_ready) {
  std::vector<zmq_pollitem_t> items;
  for (auto& l : links_) {
    items.push_back({l->host.handle(), 0, ZMQ_POLLIN, 0});
    items.push_back({l->kernel.handle(), 0, ZMQ_POLLIN, 0});
    items.push_back({l->monitor.handle(), 0, ZMQ_POLLIN, 0});
  }
  for (int fd : extra_fds) items.push_back({nullptr, fd, ZMQ_POLLIN, 0});

  for (;;) {
    // No timeout: an idle relay sleeps in the kernel and costs no CPU.
    if (zmq_poll(items.data(), static_cast<int>(items.size()), -1) < 0) {
      if (errno == EINTR) continue;
      return sys_error("relay: zmq_poll");
    }
    // Extra fds first: a signal the client sent before a message (an
    // interrupt before shutdown_request) must reach the kernel first.
    for (size_t i = kItemsPerLink * kChannelCount; i < items.size(); ++i) {
      if (!(items[i].revents & (ZMQ_POLLIN | ZMQ_POLLERR))) continue;
      if (on_fd_ready(items[i].fd)) continue;
      // Pass on what the kernel already sent (e.g. a shutdown_reply) before
      // the caller tears the sockets down.
      for (auto& l : links_) IK_TRY(forward_to_host(*l));
      return ok();
    }
    for (size_t i = 0; i < kChannelCount; ++i) {
      if (items[kItemsPerLink * i].revents & ZMQ_POLLIN) IK_TRY(forward_to_kernel(*links_[i]));
      if (items[kItemsPerLink * i + 1].revents & ZMQ_POLLIN) IK_TRY(forward_to_host(*links_[i]));
      if (items[kItemsPerLink * i + 2].revents & ZMQ_POLLIN) IK_TRY(handle_link_event(*links_[i]));
    }
  }
}

Status Relay::forward_to_kernel(Link& link) {
  size_t bytes = 0;
  for (int n = 0; n < kBatch; ++n) {
    auto got = recv_message(link.host, frames_, bytes, std::numeric_limits<size_t>::max());
    IK_TRY(got);
    if (*got == Received::kNone) return ok();
    if (log::verbose() >= 1) note_client(link, frames_.front());
    if (send_message(link.kernel, frames_)) {
      bump(link.to_kernel.messages);
      bump(link.to_kernel.bytes, bytes);
      continue;
    }
    bump(link.to_kernel.dropped);
    if (rate_limited_turn(load(link.to_kernel.dropped)))
      log::step("relay: %s: dropped a message to the kernel (queue full), %" PRIu64 " so far",
                channel_name(link.channel), load(link.to_kernel.dropped));
  }
  return ok();
}

Status Relay::forward_to_host(Link& link) {
  size_t bytes = 0;
  for (int n = 0; n < kBatch; ++n) {
    auto got = recv_message(link.kernel, frames_, bytes, options_.max_message_bytes);
    IK_TRY(got);
    if (*got == Received::kNone) return ok();
    if (*got == Received::kOversized) {
      count_oversized(link, bytes);
      continue;
    }
    if (send_message(link.host, frames_)) {
      bump(link.to_host.messages);
      bump(link.to_host.bytes, bytes);
      continue;
    }
    bump(link.to_host.dropped);
    if (rate_limited_turn(load(link.to_host.dropped)))
      log::step("relay: %s: dropped a message to a client (queue full or client gone), %" PRIu64 " so far",
                channel_name(link.channel), load(link.to_host.dropped));
  }
  return ok();
}

void Relay::count_oversized(Link& link, size_t bytes) {
  bump(link.oversized);
  const uint64_t n = load(link.oversized);
  if (rate_limited_turn(n))
    log::warn("relay: %s: dropped a %zu-byte message from the kernel (limit %zu), %" PRIu64 " so far",
              channel_name(link.channel), bytes, options_.max_message_bytes, n);
}

// ROUTER sockets give no connect event, so the first message from each
// client id stands in for "client connected"; on iopub, each subscription.
// Contents are never logged. Memory is bounded by kMaxTrackedClients.
void Relay::note_client(Link& link, const zmq::message_t& first_frame) {
  if (link.clients_logged >= kMaxTrackedClients) return;
  const char* name = channel_name(link.channel);
  if (link.channel == Channel::kIopub) {
    // XPUB hands us subscriptions: first byte 1 = subscribe, 0 = cancel.
    const auto* p = static_cast<const unsigned char*>(first_frame.data());
    if (first_frame.size() == 0 || p[0] != 1) return;
    log::step("relay: iopub: a client subscribed (topic of %zu bytes)", first_frame.size() - 1);
  } else {
    std::string id(static_cast<const char*>(first_frame.data()), first_frame.size());
    if (!link.seen_clients.insert(std::move(id)).second) return;
    log::step("relay: %s: first message from client %s", name, printable_id(first_frame).c_str());
  }
  if (++link.clients_logged == kMaxTrackedClients) {
    link.seen_clients.clear();
    log::step("relay: %s: %zu clients seen, no longer logging new ones", name, kMaxTrackedClients);
  }
}

RelayCounters Relay::counters() const {
  RelayCounters out;
  for (size_t i = 0; i < kChannelCount; ++i) {
    const Link& l = *links_[i];
    ChannelCounters& c = out.channels[i];
    c.to_kernel = {load(l.to_kernel.messages), load(l.to_kernel.bytes), load(l.to_kernel.dropped)};
    c.to_host = {load(l.to_host.messages), load(l.to_host.bytes), load(l.to_host.dropped)};
    c.oversized = load(l.oversized);
    c.kernel_link_resets = load(l.resets);
  }
  return out;
}

std::string Relay::describe_counters() const {
  const RelayCounters all = counters();
  std::string out;
  char buf[320];
  for (size_t i = 0; i < kChannelCount; ++i) {
    const ChannelCounters& c = all.channels[i];
    if (!any_activity(c)) continue;
    std::snprintf(buf, sizeof buf,
                  "%s%s: to kernel %" PRIu64 " msg %" PRIu64 " B (%" PRIu64 " dropped), to host %" PRIu64
                  " msg %" PRIu64 " B (%" PRIu64 " dropped, %" PRIu64 " oversized), %" PRIu64
                  " kernel link resets",
                  out.empty() ? "" : "\n", kNames[i], c.to_kernel.messages, c.to_kernel.bytes, c.to_kernel.dropped,
                  c.to_host.messages, c.to_host.bytes, c.to_host.dropped, c.oversized, c.kernel_link_resets);
    out += buf;
  }
  return out.empty() ? "no traffic" : out;
}

}  // namespace ik::relay
