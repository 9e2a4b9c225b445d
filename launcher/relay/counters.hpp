// What the relay counts, per channel and direction (-v prints it at exit).
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "relay/channel.hpp"

namespace ik::relay {

struct DirectionCounters {
  uint64_t messages = 0;  // complete messages (ZMTP commands not counted)
  uint64_t bytes = 0;     // message payload bytes
};

struct ChannelCounters {
  uint64_t connections = 0;          // client connections accepted
  uint64_t refused_connections = 0;  // over max_connections_per_channel
  DirectionCounters to_kernel;       // host clients -> kernel
  DirectionCounters to_host;         // kernel -> host clients
  uint64_t oversized = 0;            // connections cut: kernel message over the cap
  uint64_t protocol_errors = 0;      // connections cut: kernel broke ZMTP framing
  uint64_t rejected_sockets = 0;     // kernel socket path not a plain socket file
};

struct RelayCounters {
  std::array<ChannelCounters, kChannelCount> channels{};
  const ChannelCounters& operator[](Channel c) const { return channels[static_cast<size_t>(c)]; }
};

// One line per channel that saw traffic, or "no traffic".
std::string describe_counters(const RelayCounters& all);

}  // namespace ik::relay
