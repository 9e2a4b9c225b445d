// The launcher's side of the warm pool: ask the daemon for a waiting
// sandbox of this kernelspec; on any failure the caller starts cold.
#pragma once
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "parse/options.hpp"
#include "plan/host.hpp"
#include "plan/plan.hpp"
#include "relay/prebound.hpp"

namespace ik::pool {

struct ClaimInput {
  const Options& opts;
  const HostInfo& host;
  const Plan& cold_plan;                   // exactly what a cold start would run
  std::string connection_file;             // absolute
  std::vector<std::string> launcher_args;  // our argv[1..], as given
  pid_t parent_at_start = 0;
  // The host ports, bound first thing (relay/prebound.hpp): passed to the
  // helper with the claim, closed here once it took them; kept for our own
  // relay on a cold start. May be null.
  std::shared_ptr<relay::PreboundListeners> listeners;
};

// The kernel's exit status when a pooled sandbox ran it; nullopt when the
// caller must start cold (the reason is logged under -v). Starts the daemon
// when none runs (said under -v).
std::optional<int> try_claim(const ClaimInput& in);

}  // namespace ik::pool
