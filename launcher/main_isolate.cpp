// isolate: run a program (default $SHELL) in a rootless namespace sandbox
// that sees only the directories you choose.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "apply/host_events.hpp"
#include "apply/lifecycle.hpp"
#include "common/log.hpp"
#include "common/print_error.hpp"
#include "parse/cli.hpp"
#include "parse/terminal_cli.hpp"
#include "parse/usage_formatter.hpp"
#include "host/read_host.hpp"
#include "plan/planner.hpp"
#include "plan/terminal.hpp"
#include "relay/stdio_pump.hpp"
#include "relay/terminal.hpp"

extern char** environ;

namespace {

constexpr const char* kDescription =
    "Run PROG (default: $SHELL) in a rootless Linux namespace sandbox that sees only the directories you\n"
    "choose: read-only system directories, a curated /etc, a private empty HOME and /tmp, the mounts in\n"
    "--mnt/$MNTDIRS (default: the current directory), no network, no other processes, no capabilities.\n"
    "On a terminal PROG gets a pseudo-terminal of its own (job control; see --no-pty).\n"
    "Runs as your own uid (see --root). Exit status: PROG's status, 128+N if it died of signal N,\n"
    "125 sandbox set-up failed, 126 PROG not executable, 127 PROG not found inside (or PROG's own 127,\ne.g. its "
    "libraries could not be loaded), 2 bad usage.";

constexpr const char* kFooter = "Mount list entries:  [ro|rw|rbind,...:]PATH   DEST=SRC   DEST=none\n"
                                "Examples:\n"
                                "  isolate python3 code.py                       # sees only the current directory\n"
                                "  isolate -m 'ro:~/data .' -- python3 train.py  # plus ~/data read-only\n"
                                "  MNTDIRS='. /opt/conda' isolate --print-plan   # show what would be mounted\n"
                                "Docs: man isolate; " IK_DOCDIR "/config.md (every setting), " IK_DOCDIR "/security.md";

// isolate's running step: the program's pty, or its output pipes
// (--stdio=pipe: /dev/null and pipes instead of our stdio, copied here; see
// apply/stdio.hpp, docs/security.md), or just the monitor.
class IsolateHooks : public ik::LifecycleHooks {
 public:
  explicit IsolateHooks(bool pipe_stdio) : pipe_stdio_(pipe_stdio) {}
  bool pipe_stdio() const override { return pipe_stdio_; }
  // isolate needs nothing from the exec (no relay into the root; a pty's
  // master still comes first): it sleeps until the end, unless -v is to
  // print the program's pid.
  bool wait_for_exec() const override { return ik::log::verbose() > 0; }

  ik::Ending run(ik::Running& r) override {
    if (r.plan.terminal.pty) {
      auto relayed = ik::run_terminal(r.monitor, r.sandbox, r.sandbox.take_pty_master());
      if (!relayed) return {ik::print_error(relayed.error()), false};
      return {*relayed};
    }
    if (!r.stdio) return {r.monitor.run()};
    auto pump = ik::StdioPump::create(*r.stdio);
    if (!pump) {
      ik::print_error(pump.error());
      return {r.monitor.run()};
    }
    ik::HostEvents events(r.monitor, r.sandbox);
    events.add(**pump);
    const int status = events.poll_until_exit();
    (*pump)->finish();
    if (ik::log::verbose()) ik::log::step("stdio totals:\n%s", (*pump)->describe().c_str());
    return {status};
  }

 private:
  bool pipe_stdio_;
};

// Flushes our stdio and ends the process without destructors: once the
// sandbox is released (run_plan's locals are gone), destroying the CLI11
// app, the plan and the caller's environment map would only free memory,
// at about 0.07 ms of a start (bench/analysis.md, section 1b).
[[noreturn]] void leave(int status) {
  std::fflush(nullptr);
  _exit(status);
}

int run(const ik::Options& opts, bool pipe_stdio) {
  auto host = ik::read_host_info(environ, ik::cgroup_probe_needed(opts.limits, opts.limits_via));
  if (!host) return ik::print_error(host.error());
  auto plan = ik::build_plan(opts, *host);
  if (!plan) return ik::print_error(plan.error());
  plan->terminal = ik::choose_terminal(opts.pty, isatty(0), isatty(1), isatty(2), tcgetpgrp(0) == getpgrp());
  IsolateHooks hooks(pipe_stdio);
  leave(ik::run_plan(*plan, *host, opts.print_plan, hooks));
}

}  // namespace

int main(int argc, char** argv) {
  ik::log::set_program("isolate");
  CLI::App app(kDescription, "isolate");
  app.footer(kFooter);
  app.set_version_flag("--version", IK_VERSION);
  app.formatter(std::make_shared<ik::UsageFormatter>("isolate [OPTIONS] [--] [PROG [ARGS...]]"));
  ik::SandboxCli cli(app);
  std::string stdio_mode = "inherit";
  app.add_option("--stdio", stdio_mode,
                 "inherit (default): PROG gets our stdin/stdout/stderr (or a pty of its own on a terminal). pipe: "
                 "/dev/null and pipes, copied here (terminal controls removed), so PROG cannot reopen what "
                 "our stdio points at; for non-interactive runs, never with a pty")
      ->type_name("MODE");
  ik::TerminalCli terminal_cli(app);
  auto split = ik::split_command(app, ik::arguments(argc, argv));
  if (int rc = ik::parse_options(app, split.options, "isolate"); rc >= 0) return rc;
  ik::Options opts;
  opts.argv = split.command;
  if (auto s = cli.finish(opts, std::getenv("MNTDIRS")); !s) return ik::print_error(s.error());
  if (stdio_mode != "inherit" && stdio_mode != "pipe")
    return ik::print_error(ik::usage_error("--stdio " + stdio_mode + ": unknown mode",
                                           "use --stdio=inherit or --stdio=pipe"));
  if (auto s = terminal_cli.finish(opts); !s) return ik::print_error(s.error());
  if (stdio_mode == "pipe") {
    // Pipes are for non-interactive runs: no terminal to hand a pty to.
    if (opts.pty == ik::PtyMode::kAlways)
      return ik::print_error(ik::usage_error("--pty and --stdio=pipe exclude each other",
                                             "use --pty for an interactive program, --stdio=pipe for a batch one"));
    opts.pty = ik::PtyMode::kNever;
  }
  ik::log::set_verbose(opts.verbose);
  leave(run(opts, stdio_mode == "pipe"));
}
