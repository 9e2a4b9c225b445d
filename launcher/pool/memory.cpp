#include "pool/memory.hpp"

#include <cstdlib>

#include "common/file_io.hpp"

namespace ik::pool {

long kib_field(const std::string& text, const std::string& field) {
  for (size_t at = 0; at < text.size();) {
    const size_t end = text.find('\n', at);
    const std::string line = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
    if (line.rfind(field, 0) == 0) return std::strtol(line.c_str() + field.size(), nullptr, 10);
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return -1;
}

long process_memory_kib(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  bool ok = false;
  // Reading smaps_rollup needs ptrace read access: ours (same uid, the
  // sandbox's user namespace is a child of the daemon's).
  const long pss = kib_field(read_small_file_or_empty(proc + "/smaps_rollup", &ok), "Pss:");
  if (ok && pss >= 0) return pss;
  const long rss = kib_field(read_small_file_or_empty(proc + "/status"), "VmRSS:");
  return rss > 0 ? rss : 0;
}

long memory_kib(const std::vector<pid_t>& pids) {
  long sum = 0;
  for (pid_t p : pids)
    if (p > 0) sum += process_memory_kib(p);
  return sum;
}

}  // namespace ik::pool
