// The pool daemon's poll timeout: the soonest of its timers (pool/wakeup).
#include <doctest/doctest.h>

#include "pool/run_hold.hpp"
#include "pool/wakeup.hpp"

using ik::pool::next_wakeup_ms;
using ik::pool::Pending;

TEST_CASE("pool wakeup: nothing pending, or --idle 0, wakes once a minute") {
  CHECK(next_wakeup_ms({}) == ik::pool::kMaxWakeupMs);
  CHECK(next_wakeup_ms({.idle_left_s = 30 * 60.0}) == ik::pool::kMaxWakeupMs);
}

TEST_CASE("pool wakeup: the idle stop, rounded up, never negative") {
  CHECK(next_wakeup_ms({.idle_left_s = 1.5}) == 1500);
  CHECK(next_wakeup_ms({.idle_left_s = 0.0004}) == 1);  // woken after it is due, not just before
  CHECK(next_wakeup_ms({.idle_left_s = 0.0}) == 0);
  CHECK(next_wakeup_ms({.idle_left_s = -2.0}) == 0);
}

TEST_CASE("pool wakeup: the soonest timer wins") {
  CHECK(next_wakeup_ms({.idle_left_s = 10.0, .raise_pending = true}) == ik::pool::kRaiseRetryMs);
  CHECK(next_wakeup_ms({.idle_left_s = 0.005, .raise_pending = true}) == 5);  // the idle stop is sooner
  CHECK(next_wakeup_ms({.claims_waiting = true}) == ik::pool::kRunBoostEveryMs);
  CHECK(next_wakeup_ms({.raise_pending = true, .claims_waiting = true}) == ik::pool::kRaiseRetryMs);
  // an ending run pool: its next step (the SIGKILL after the grace), polled at least every 100 ms
  CHECK(next_wakeup_ms({.ending_ms = 3001}) == ik::pool::kEndingPollMs);
  CHECK(next_wakeup_ms({.ending_ms = 7}) == 7);
  CHECK(next_wakeup_ms({.idle_left_s = 0.002, .ending_ms = 7}) == 2);
}

TEST_CASE("pool wakeup: a listener resting for want of descriptors is polled again when its rest ends") {
  CHECK(next_wakeup_ms({.accept_paused_ms = 40}) == 40);
  CHECK(next_wakeup_ms({.raise_pending = true, .accept_paused_ms = 40}) == ik::pool::kRaiseRetryMs);
}
