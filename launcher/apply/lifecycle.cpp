#include "apply/lifecycle.hpp"

#include <signal.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "apply/exec.hpp"
#include "apply/limits.hpp"
#include "common/log.hpp"
#include "common/print_error.hpp"
#include "parse/json_text.hpp"

namespace ik {

namespace {

// Which limit ended the program, if one did: the wall time, then what
// explain_limit_exit finds (cgroup events, SIGXCPU, SIGXFSZ, ...).
void explain_end(const std::string& subject, const Running& r) {
  const std::string who = subject.empty() ? "" : subject + " ";     // "kernel killed after ..."
  const std::string about = subject.empty() ? "" : subject + ": ";  // "kernel: killed by ..."
  if (r.monitor.timed_out())
    std::fprintf(stderr, "%s: %skilled after the wall-time limit of %llus (--wall-time)\n", log::program(), who.c_str(),
                 static_cast<unsigned long long>(*r.plan.limits.wall_seconds));
  const std::string why =
      explain_limit_exit(r.plan, r.monitor.exit_status(), r.sandbox.limit_events(), r.monitor.timed_out());
  if (!why.empty()) std::fprintf(stderr, "%s: %s%s\n", log::program(), about.c_str(), why.c_str());
}

// run_started_sandbox(), and for a start whose report was deferred (see
// LifecycleHooks::wait_for_exec) the set-up error that ended it, printed
// as run_plan prints one from a waiting spawn. `host_env`: null for an
// adopted sandbox.
int run_started(StartedSandbox&& started, const Plan& plan, LifecycleHooks& hooks,
                const std::map<std::string, std::string>* host_env) {
  // Owned here: destroyed (killed if still running, reaped, its cgroup
  // removed) on every way out, after the hooks are done with it.
  std::optional<ChildStdio> stdio = std::move(started.stdio);
  SandboxProcess sandbox = std::move(started.process);
  auto monitor = Monitor::create(sandbox, plan.limits.wall_seconds);
  if (!monitor) return print_error(monitor.error());
  Running running{plan, sandbox, *monitor, stdio};
  const Ending end = hooks.run(running);
  if (auto failed = sandbox.deferred_setup_error())
    return print_error(host_env ? with_not_found_hint(*failed, *host_env) : *failed);
  if (end.explain) explain_end(hooks.subject(), running);
  hooks.after_end(running, end);
  return end.status;
}

}  // namespace

int Running::abandon(const Error& e) {
  print_error(e);
  sandbox.signal(SIGKILL);
  return monitor.run();
}

int run_plan(const Plan& plan, const HostInfo& host, bool print_plan, LifecycleHooks& hooks) {
  if (print_plan) {
    std::cout << display_json(plan_to_json(plan)) << std::endl;
    return 0;
  }
  if (auto stop = hooks.before_start()) return *stop;
  if (auto s = block_sandbox_signals(); !s) return print_error(s.error());
  if (auto adopted = hooks.adopt(plan)) return run_started_sandbox(std::move(*adopted), plan, hooks);
  std::optional<ChildStdio> stdio;
  if (hooks.pipe_stdio()) {
    // The program never gets our stdio (the Jupyter server's log, a
    // terminal): reopened through /proc/self/fd it would be readable and
    // writable from inside. It writes into pipes that we copy out.
    auto created = ChildStdio::create();
    if (!created) return print_error(created.error());
    stdio.emplace(std::move(*created));
  }
  auto sandbox = spawn_sandbox(plan, stdio ? &*stdio : nullptr, hooks.wait_for_exec());
  if (!sandbox) return print_error(with_not_found_hint(sandbox.error(), host.env));
  return run_started(StartedSandbox{std::move(*sandbox), std::move(stdio)}, plan, hooks, &host.env);
}

int run_started_sandbox(StartedSandbox&& started, const Plan& plan, LifecycleHooks& hooks) {
  return run_started(std::move(started), plan, hooks, nullptr);
}

}  // namespace ik
