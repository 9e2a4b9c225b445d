#include "relay/channel.hpp"

#include <array>

namespace ik::relay {

const char* channel_name(Channel c) {
  static constexpr std::array<const char*, kChannelCount> kNames{"shell", "iopub", "stdin", "control", "hb"};
  return kNames[static_cast<size_t>(c)];
}

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

}  // namespace ik::relay
