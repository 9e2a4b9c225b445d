#include "relay/counters.hpp"

#include <cinttypes>
#include <cstdio>

namespace ik::relay {

std::string describe_counters(const RelayCounters& all) {
  std::string out;
  char buf[400];
  for (size_t i = 0; i < kChannelCount; ++i) {
    const ChannelCounters& c = all.channels[i];
    if (!c.connections && !c.refused_connections && !c.rejected_sockets) continue;
    std::snprintf(buf, sizeof buf,
                  "%s%s: %" PRIu64 " connections (%" PRIu64 " refused), to kernel %" PRIu64 " msg %" PRIu64
                  " B, to host %" PRIu64 " msg %" PRIu64 " B, cut %" PRIu64 " oversized + %" PRIu64
                  " malformed, %" PRIu64 " kernel sockets rejected",
                  out.empty() ? "" : "\n", channel_name(static_cast<Channel>(i)), c.connections, c.refused_connections,
                  c.to_kernel.messages, c.to_kernel.bytes, c.to_host.messages, c.to_host.bytes, c.oversized,
                  c.protocol_errors, c.rejected_sockets);
    out += buf;
  }
  return out.empty() ? "no traffic" : out;
}

}  // namespace ik::relay
