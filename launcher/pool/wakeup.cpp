#include "pool/wakeup.hpp"

#include <algorithm>
#include <cmath>

#include "pool/run_hold.hpp"

namespace ik::pool {

int next_wakeup_ms(const Pending& p) {
  int ms = kMaxWakeupMs;
  if (p.idle_left_s)
    ms = std::min(ms, static_cast<int>(std::ceil(std::clamp(*p.idle_left_s, 0.0, kMaxWakeupMs / 1000.0) * 1000)));
  if (p.raise_pending) ms = std::min(ms, kRaiseRetryMs);
  if (p.claims_waiting) ms = std::min(ms, kRunBoostEveryMs);
  if (p.ending_ms) ms = std::min({ms, *p.ending_ms, kEndingPollMs});
  if (p.accept_paused_ms) ms = std::min(ms, *p.accept_paused_ms);
  return std::max(ms, 0);
}

}  // namespace ik::pool
