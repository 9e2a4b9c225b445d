#include "pool/demand.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "common/fd.hpp"
#include "common/file_io.hpp"

namespace ik::pool {

bool take_normal_refill_request() {
  const char* v = std::getenv(kNormalRefillEnv);
  const bool normal = v != nullptr && std::string(v) == "1";
  unsetenv(kNormalRefillEnv);
  return normal;
}

bool raise_refill(pid_t helper) {
  // The owner may write any nice >= 0 to another process's autogroup file
  // (kernel: proc_sched_autogroup_set_nice); the helper is ours.
  UniqueFd fd(open(("/proc/" + std::to_string(helper) + "/autogroup").c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return true;
  if (write(fd.get(), "0", 1) < 0) return errno != EAGAIN;
  return true;
}

int autogroup_nice(pid_t pid) {
  const std::string text = read_small_file_or_empty("/proc/" + std::to_string(pid) + "/autogroup");
  const size_t at = text.find(" nice ");
  return at == std::string::npos ? -1 : std::atoi(text.c_str() + at + 6);
}

}  // namespace ik::pool
