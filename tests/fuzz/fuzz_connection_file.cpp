// libFuzzer target: the Jupyter connection-file parser (untrusted input:
// any local user can hand the launcher a file).
#include <cstddef>
#include <cstdint>
#include <string>

#include "relay/connection_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto info = ik::relay::parse_connection_json(text, "fuzz");
  if (info.ok()) {
    // Accepted files produce a kernel-side copy that parses again.
    auto kernel = ik::relay::kernel_side_connection(*info, "/run/isolated-kernel/kernel");
    if (!ik::relay::parse_connection_json(kernel.dump(), "fuzz-kernel").ok()) __builtin_trap();
  }
  return 0;
}
