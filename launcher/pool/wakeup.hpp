// When the pool daemon's poll loop wakes up with nothing to read: the
// soonest of its timers, as one pure function of what is pending
// (unit-tested: tests/unit/test_pool_wakeup.cpp).
#pragma once
#include <optional>

namespace ik::pool {

// Nothing pending: wake up once a minute anyway.
inline constexpr int kMaxWakeupMs = 60000;
// A rate-limited autogroup raise (pool/demand.hpp) is tried again this soon:
// the kernel allows one write per 100 ms system-wide.
inline constexpr int kRaiseRetryMs = 20;
// An ending run pool is checked at least this often (pool/run_hold.hpp).
inline constexpr int kEndingPollMs = 100;

struct Pending {
  std::optional<double> idle_left_s;    // until the idle stop; none with --idle 0
  bool raise_pending = false;           // a refill to raise to nice 0 again
  bool claims_waiting = false;          // claims of a run's pool wait for a starting sandbox
  std::optional<int> ending_ms;         // the soonest next step of an ending run pool
  std::optional<int> accept_paused_ms;  // until the resting listener is polled again
};

// Milliseconds for poll(): >= 0, at most kMaxWakeupMs. The idle stop is
// rounded up, so the loop wakes after it is due, not just before.
int next_wakeup_ms(const Pending& p);

}  // namespace ik::pool
