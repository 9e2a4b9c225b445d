#include "pool/run_hold.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "apply/client_watch.hpp"
#include "common/log.hpp"
#include "pool/cpu_cgroup.hpp"
#include "pool/priority.hpp"

namespace ik::pool {

std::string run_pool_id(const std::string& spec_id, const std::string& token) { return spec_id + "\nrun " + token; }

EndingPool::EndingPool(const std::vector<ExpectedChild>& procs, UniqueFd reply_to, nlohmann::json reply)
    : reply_to_(std::move(reply_to)),
      reply_(std::move(reply)),
      kill_at_(RunClock::now() + std::chrono::milliseconds(kRunEndGraceMs)) {
  // pidfds taken before the pool's sockets close, so a pid reused later is
  // never signalled. A helper is the daemon's child, an init its helper's;
  // checked once the pidfd pins the process: the number may be stale (a
  // helper reap() took before its hang-up was read, an init its helper
  // reaped) and name another process now, which must not get our SIGKILL.
  for (const auto& [pid, parent] : procs)
    if (UniqueFd fd(pid > 0 ? static_cast<int>(syscall(SYS_pidfd_open, pid, 0)) : -1);
        fd.valid() && parent_of(pid) == parent)
      left_.push_back(std::move(fd));
}

std::vector<int> EndingPool::fds() const {
  std::vector<int> out;
  for (const auto& fd : left_) out.push_back(fd.get());
  return out;
}

bool EndingPool::step() {
  std::erase_if(left_, [](const UniqueFd& fd) {
    pollfd p{fd.get(), POLLIN, 0};
    return poll(&p, 1, 0) > 0;
  });
  if (!left_.empty() && !killed_ && RunClock::now() >= kill_at_) {
    // A helper still setting up at nice 19 on a busy machine sees the
    // hang-up late (as `pool stop`, daemon.cpp).
    log::warn("pool: %zu helper(s) or sandbox(es) of an ended run's pool still there: SIGKILL", left_.size());
    for (const auto& fd : left_) syscall(SYS_pidfd_send_signal, fd.get(), SIGKILL, nullptr, 0);
    killed_ = true;
  }
  if (!left_.empty()) return false;
  if (reply_to_.valid()) (void)send_message(reply_to_.get(), reply_);
  reply_to_.reset();
  return true;
}

int EndingPool::ms_to_next_step() const {
  if (killed_) return 100;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(kill_at_ - RunClock::now()).count();
  return static_cast<int>(std::max<long long>(0, ms)) + 1;
}

Result<HoldRequest> parse_hold(const nlohmann::json& body) {
  HoldRequest h;
  try {
    h.spec = body.at("spec").get<std::vector<std::string>>();
    h.env = body.at("env").get<std::map<std::string, std::string>>();
    h.size = body.at("size").get<int>();
    h.token = body.at("run").get<std::string>();
  } catch (const std::exception& e) {
    return Error{"pool: bad hold request", 0, e.what(), {}, kExitUsage};
  }
  if (h.spec.empty() || h.token.empty() || h.size < 0)
    return Error{"pool: bad hold request", 0, "spec, run and size are required", {}, kExitUsage};
  return h;
}

bool boost_waited_for(pid_t helper) {
  if (!raise_from_refill_cgroup(helper)) return false;  // the cgroup fallback (pool/cpu_cgroup.hpp)
  const int nice = autogroup_nice_of(helper);
  if (nice <= 0) return true;  // never lowered (autogroups off) or raised already
  return set_autogroup_nice_of(helper, 0) == 0;
}

pid_t peer_pid(int sock) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return 0;
  return cred.pid;
}

}  // namespace ik::pool
