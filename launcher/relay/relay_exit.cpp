// The end of a relay's life: the kernel's last words passed on, iopub
// clients held for the exit notice, and the notice itself.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <vector>

#include "common/log.hpp"
#include "relay/relay_impl.hpp"

namespace ik::relay {

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

// The kernel has exited: pass on what it wrote before (a shutdown_reply, the
// last iopub status) to clients that can take it, within kDrainTime.
void Relay::Impl::drain_at_exit() {
  const auto deadline = std::chrono::steady_clock::now() + kDrainTime;
  for (Conn& c : conns_) {
    if (c.dead || c.held || !c.dialled) continue;
    c.kernel.readable = true;
    c.up.clear();  // nothing more goes to a kernel that is gone
  }
  // The loop has ended: nothing takes the connections out of the ready
  // queue any more; each pass below gives every one a longer turn instead.
  ready_.clear();
  for (;;) {
    bool waiting = false;
    for (Conn& c : conns_) {
      if (c.dead || c.held || !c.dialled) continue;
      c.queued = false;
      pump(c, kDrainTurnBudget, "kernel exited");
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
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (targets.empty() || left.count() <= 0) break;
    if (::poll(fds.data(), fds.size(), static_cast<int>(left.count()) + 1) < 0 && errno != EINTR) break;
  }
  // A client that took part of it would see a broken message: cut it.
  for (Target& t : targets)
    if (t.sent) close_conn(*t.c, "exit notice not taken in time");
  return done;
}

}  // namespace ik::relay
