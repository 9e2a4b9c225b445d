#include "apply/pid_order.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/fd.hpp"
#include "common/log.hpp"

namespace ik {

namespace {
// The init's only: set in apply_proc, used and closed in child_steps.
UniqueFd& ns_last_pid() {
  static UniqueFd fd;
  return fd;
}
}  // namespace

void move_setup_pids_up() {
  UniqueFd fd(open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return;
  if (pwrite(fd.get(), "1000", 4, 0) != 4) {
    log::step("pid order: ns_last_pid not written (%s)", std::strerror(errno));
    return;
  }
  ns_last_pid() = std::move(fd);
}

void keep_ns_last_pid(const std::string& proc_dir) {
  if (ns_last_pid().valid()) return;
  ns_last_pid().reset(open((proc_dir + "/sys/kernel/ns_last_pid").c_str(), O_WRONLY | O_CLOEXEC));
}

void next_pid_is_two() {
  UniqueFd fd(std::move(ns_last_pid()));
  if (!fd.valid()) return;
  // At offset 0: the descriptor may have written "1000" already, and a
  // sysctl ignores a write past its start (kernel.sysctl_writes_strict).
  if (pwrite(fd.get(), "1", 1, 0) != 1) log::step("pid order: ns_last_pid not written (%s)", std::strerror(errno));
}

}  // namespace ik
