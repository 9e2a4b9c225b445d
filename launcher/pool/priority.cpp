#include "pool/priority.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "common/file_io.hpp"
#include "common/fd.hpp"
#include "common/log.hpp"
#include "pool/cpu_cgroup.hpp"

namespace ik::pool {

namespace {

constexpr int kRetryStepMs = 5;

// One write of "N" to /proc/PID/autogroup: 0 or the errno (EAGAIN: rate-limited).
int write_autogroup(const std::string& proc_dir, int nice) {
  UniqueFd fd(open((proc_dir + "/autogroup").c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return errno;
  const std::string text = std::to_string(nice);
  if (write(fd.get(), text.data(), text.size()) < 0) return errno;
  return 0;
}

int write_own_autogroup(int nice) { return write_autogroup("/proc/self", nice); }

int nice_in(const std::string& text) {
  const size_t at = text.find(" nice ");
  return at == std::string::npos ? -1 : std::atoi(text.c_str() + at + 6);
}

}  // namespace

PriorityProbe refill_priority_from(const std::string& autogroup_enabled, const std::string& proc_cgroup,
                                   const std::string& v2_root_subtree_control) {
  if (autogroup_enabled.empty())
    return {false, "refills run at normal priority: the kernel has no scheduler autogroups (CONFIG_SCHED_AUTOGROUP)"};
  if (autogroup_enabled[0] != '1')
    return {false, "refills run at normal priority: scheduler autogroups are off (kernel.sched_autogroup_enabled=0)"};
  // /proc/self/cgroup: "ID:CONTROLLERS:PATH" per hierarchy; v1's cpu
  // controller has its own line, v2 is "0::PATH".
  std::istringstream in(proc_cgroup);
  std::string v2_path;
  bool v1_cpu = false;
  for (std::string line; std::getline(in, line);) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string ctrls = "," + line.substr(a + 1, b - a - 1) + ",";
    const std::string path = line.substr(b + 1);
    if (ctrls == ",,") v2_path = path;
    if (ctrls.find(",cpu,") != std::string::npos) {
      v1_cpu = true;
      if (path != "/")
        return {false, "refills run at normal priority: this process is in the cpu cgroup " + path +
                           ", where scheduler autogroups do not apply"};
    }
  }
  // v2: the cpu controller applies below the root only where the root
  // enables it for its children.
  if (!v1_cpu && !v2_path.empty() && v2_path != "/" &&
      (" " + v2_root_subtree_control + " ").find(" cpu ") != std::string::npos)
    return {false, "refills run at normal priority: this process is in the cgroup " + v2_path +
                       " with the cpu controller, where scheduler autogroups do not apply"};
  return {true,
          "refills run at low CPU priority (scheduler autogroup nice " + std::to_string(kRefillNice) +
              ", back to 0 once ready)",
          "autogroup"};
}

PriorityProbe daemon_refill_priority() {
  PriorityProbe p = probe_refill_priority();
  if (p.low) return p;
  const RefillCgroups& c = refill_cgroups();
  // "refills run at normal priority: <why autogroups do not apply>"
  const std::string no_autogroup = p.why.substr(p.why.find(": ") + 2);
  if (!c.refill.empty())
    return {true, "refills run at low CPU priority (" + c.why + "); scheduler autogroups do not apply: " + no_autogroup,
            "cgroup"};
  return {false, p.why + "; no cgroup fallback: " + (c.why.empty() ? "not tried" : c.why), "none"};
}

PriorityProbe probe_refill_priority() {
  std::string ctl = read_small_file_or_empty("/sys/fs/cgroup/cgroup.subtree_control");
  for (char& c : ctl)
    if (c == '\n') c = ' ';
  return refill_priority_from(read_sysctl("kernel/sched_autogroup_enabled"),
                              read_small_file_or_empty("/proc/self/cgroup"), ctl);
}

int set_own_autogroup_nice(int nice, int retry_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(retry_ms);
  for (;;) {
    const int err = write_own_autogroup(nice);
    if (err != EAGAIN || std::chrono::steady_clock::now() >= until) return err;
    usleep(kRetryStepMs * 1000);
  }
}

int lower_refill_priority() {
  constexpr int kRetryMs = 2000;  // not on a claim's path: a refill may wait
  if (probe_refill_priority().low) {
    if (int err = set_own_autogroup_nice(kRefillNice, kRetryMs); err != 0)
      log::warn("pool: refill at normal priority: /proc/self/autogroup: %s", std::strerror(err));
  }
  return own_autogroup_nice();
}

int own_autogroup_nice() { return nice_in(read_small_file_or_empty("/proc/self/autogroup")); }

int set_autogroup_nice_of(pid_t pid, int nice) { return write_autogroup("/proc/" + std::to_string(pid), nice); }

int autogroup_nice_of(pid_t pid) {
  return nice_in(read_small_file_or_empty("/proc/" + std::to_string(pid) + "/autogroup"));
}

std::string claim_raise_problem(int err) {
  if (err == 0 || err == EAGAIN) return {};
  return std::string("pool: the kernel stays at low CPU priority: /proc/self/autogroup back to nice 0: ") +
         std::strerror(err);
}

NormalPriorityAtClaim::NormalPriorityAtClaim() {
  if (own_autogroup_nice() <= 0) return;  // never lowered (autogroups off, or the write failed)
  if (const int err = write_own_autogroup(0); err != EAGAIN) {
    failed(err);
    return;
  }
  // Rate-limited: another process changed an autogroup in the last 100 ms.
  // Threads share the autogroup (it is the session's), so the thread's
  // /proc/self is as good as ours.
  retry_ = std::thread([this] {
    while (!stop_.load()) {
      const int err = write_own_autogroup(0);
      if (err != EAGAIN) return failed(err);
      usleep(kRetryStepMs * 1000);
    }
  });
}

void NormalPriorityAtClaim::failed(int err) {
  if (err == 0) return;
  const std::lock_guard lock(mu_);
  error_ = err;
  if (reporting_) log::step("%s", claim_raise_problem(err).c_str());
}

void NormalPriorityAtClaim::report_to_launcher() {
  const std::lock_guard lock(mu_);
  reporting_ = true;
  if (error_ != 0) log::step("%s", claim_raise_problem(error_).c_str());
}

NormalPriorityAtClaim::~NormalPriorityAtClaim() {
  stop_ = true;
  if (retry_.joinable()) retry_.join();
}

}  // namespace ik::pool
