// libFuzzer target: the mount-list grammar (-m/--mnt, MNTDIRS).
#include <cstddef>
#include <cstdint>
#include <string>

#include "parse/mount_list.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto entries = ik::parse_mount_list(text);
  if (entries.ok()) {
    for (const auto& e : *entries) {
      // Invariants: every accepted entry has a destination, and DEST=none
      // never carries a source.
      if (e.dest.empty()) __builtin_trap();
      if (e.none && !e.src.empty()) __builtin_trap();
    }
  }
  return 0;
}
