// The daemon's side of a run's own pool (docs/pool.md "Pools of a run").
//
// `isolated-kernel run` with a pooled kernelspec opens a connection to the
// daemon and sends {"op":"hold","spec","env","size","run":TOKEN}: the daemon
// makes a pool of that launcher argv for the run alone (keyed by spec and
// token; the run's launchers name the token in their claims, from
// IK_POOL_RUN), sized by the run (-j, then fewer as its notebooks run out:
// {"op":"resize","size":N}), and fills it at once. The connection is the
// pool's lifeline: {"op":"release"} on it, or its hang-up (the run killed,
// SIGKILL included), ends the pool: its waiting sandboxes go, and the
// release is answered (with the pool's counts) once their helpers and
// sandbox inits are gone. Other pools are untouched.
//
// A claim of a run's pool that finds no ready sandbox but one starting
// waits for it rather than start cold (the run's first kernels), at most
// kRunClaimWaitMs: the sandbox started earlier than a cold start would
// now, and while a claim waits for it, it runs at normal priority (its
// autogroup's nice back to 0, pool/priority.hpp), so it is ready no later
// than a cold start begun at the claim would be.
#pragma once
#include <sys/types.h>

#include <poll.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/fd.hpp"
#include "pool/proto.hpp"

namespace ik::pool {

using RunClock = std::chrono::steady_clock;

// Below the claiming launcher's own 10 s wait for an answer (claim.cpp), so
// the daemon never hands over a claim its launcher gave up on.
inline constexpr int kRunClaimWaitMs = 8000;
// A waiting claim's sandbox is checked (and raised to nice 0 again) this often.
inline constexpr int kRunBoostEveryMs = 100;
// After a release or hang-up: helpers and inits get this long, then SIGKILL.
inline constexpr int kRunEndGraceMs = 3000;

// The pools_ map key of a run's pool: the spec's and the run's token.
std::string run_pool_id(const std::string& spec_id, const std::string& token);

// One run holding a pool: its lifeline connection.
struct HeldRun {
  std::string token;
  std::string pool_id;
  pid_t pid = 0;  // the run's process (SO_PEERCRED)
  UniqueFd conn;
};

// A claim of a run's pool waiting for a starting sandbox.
struct WaitingClaim {
  UniqueFd conn;
  Message msg;
  std::string pool_id;
  RunClock::time_point since, deadline;
};

// The processes of an ended run pool (helpers, sandbox inits), followed
// until they are gone (pidfds), SIGKILLed after the grace; then the release
// is answered (when the run asked for it rather than hung up).
// A process and the parent it must still have to be ours: a remembered pid
// may be stale (reaped, and reused by another process).
struct ExpectedChild {
  pid_t pid;
  pid_t parent;
};

class EndingPool {
 public:
  EndingPool(const std::vector<ExpectedChild>& procs, UniqueFd reply_to, nlohmann::json reply);
  // The pidfds to poll (POLLIN: that process ended).
  std::vector<int> fds() const;
  // Call after poll: drops ended processes, SIGKILLs after the grace.
  // True when nothing is left (the reply has been sent).
  bool step();
  int ms_to_next_step() const;

 private:
  std::vector<UniqueFd> left_;
  UniqueFd reply_to_;
  nlohmann::json reply_;
  RunClock::time_point kill_at_;
  bool killed_ = false;
};

// The hold request's fields, checked: spec, env, size, run token.
struct HoldRequest {
  std::vector<std::string> spec;
  std::map<std::string, std::string> env;
  int size = 0;
  std::string token;
};
Result<HoldRequest> parse_hold(const nlohmann::json& body);

// Raises a starting sandbox a claim waits for back to normal CPU priority
// (its helper's autogroup, which its sandbox shares). One try; the caller
// repeats every kRunBoostEveryMs (rate limit, or the helper lowering it
// after our write). True when it is at nice 0 now.
bool boost_waited_for(pid_t helper);

// The pid on the other end of a unix socket (SO_PEERCRED), 0 if unknown.
pid_t peer_pid(int sock);

}  // namespace ik::pool
