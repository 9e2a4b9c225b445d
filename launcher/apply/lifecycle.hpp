// One lifecycle for every program that runs a sandbox (isolate, the kernel
// launcher): --print-plan -> last check -> block signals -> spawn (or adopt
// a sandbox built earlier) -> not-found hint -> the running step -> which
// limit ended the program. A fix to signals, exits or clean-up lands here
// once; what differs between the programs are the hooks (the launcher's add
// the relay, the client watch and the exit notice: relay/kernel_run.hpp).
//
// A sandbox built earlier (the warm pool's) enters at the running step:
// either the hooks' adopt() returns it, so run_plan() runs it in place of a
// spawn, or the caller passes it to run_started_sandbox() directly, having
// called before_start() and block_sandbox_signals() itself.
#pragma once
#include <optional>

#include "apply/monitor.hpp"
#include "apply/sandbox.hpp"
#include "apply/stdio.hpp"
#include "common/error.hpp"
#include "plan/host.hpp"
#include "plan/plan.hpp"

namespace ik {

// A sandbox whose program runs: spawn_sandbox()'s, or one handed over.
struct StartedSandbox {
  SandboxProcess process;
  // The read ends of the program's stdout/stderr pipes, when it writes into
  // pipes (LifecycleHooks::pipe_stdio()); the running step copies them out.
  std::optional<ChildStdio> stdio;
};

// The running step, as the hooks see it.
struct Running {
  const Plan& plan;
  SandboxProcess& sandbox;
  Monitor& monitor;
  std::optional<ChildStdio>& stdio;

  // The way out of a running step that failed: prints `e`, kills the
  // sandbox and waits for it. Returns the sandbox's exit status.
  int abandon(const Error& e);
};

// How the running step ended.
struct Ending {
  int status = 0;       // our exit status
  bool explain = true;  // say which limit ended the program; false when the hooks said all there is
};

class LifecycleHooks {
 public:
  virtual ~LifecycleHooks() = default;
  // Who the end lines are about: "" for isolate ("isolate: killed after the
  // wall-time limit ..."), "kernel" for the launcher ("...: kernel killed
  // after ...", "...: kernel: killed by the memory limit ...").
  virtual const char* subject() const { return ""; }
  // The program's fds 0-2 are /dev/null and pipes (apply/stdio.hpp)
  // instead of ours.
  virtual bool pipe_stdio() const { return false; }
  // Whether spawning waits for the program's exec (the default: the root,
  // the pty's master and the program's pid come with it) or returns at
  // once, the set-up report read after the end (spawn_sandbox).
  virtual bool wait_for_exec() const { return true; }
  // The last check before anything starts: a value ends the lifecycle with
  // that exit status (the launcher's client is already gone).
  virtual std::optional<int> before_start() { return std::nullopt; }
  // A sandbox built earlier for this plan (the pool's), run instead of a
  // new one; nothing (the default) spawns one. Called with the forwarded
  // signals blocked.
  virtual std::optional<StartedSandbox> adopt(const Plan&) { return std::nullopt; }
  // The running step: serves the sandbox until it exits. The default is
  // the monitor alone.
  virtual Ending run(Running& r) { return {r.monitor.run()}; }
  // After the end lines (or instead of them, when !end.explain).
  virtual void after_end(Running&, const Ending&) {}
};

// The whole lifecycle of `plan`; returns our exit status. `host` gives the
// caller's environment for the not-found hint.
int run_plan(const Plan& plan, const HostInfo& host, bool print_plan, LifecycleHooks& hooks);

// From the running step on. The forwarded signals must already be blocked
// (block_sandbox_signals(), before the sandbox was started or claimed), so
// none is lost before the monitor's signalfd reads them.
int run_started_sandbox(StartedSandbox&& started, const Plan& plan, LifecycleHooks& hooks);

}  // namespace ik
