// The five Jupyter channels as the relay numbers them, and where each one
// lives: the host's port from the connection file, the kernel's ipc port.
#pragma once
#include <cstddef>

#include "relay/connection_file.hpp"

namespace ik::relay {

enum class Channel : int { kShell = 0, kIopub, kStdin, kControl, kHb };
inline constexpr size_t kChannelCount = 5;
const char* channel_name(Channel c);
// The host's port of channel `c` (the connection file's *_port).
int host_port(const ConnectionInfo& host, Channel c);
// The kernel's ipc socket number of channel `c` (see KernelIpcPort).
int kernel_port(Channel c);

}  // namespace ik::relay
