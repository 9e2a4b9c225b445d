// isolated-kernel-launcher: the argv[0] of an isolated kernelspec. Starts
// the real kernel in the sandbox with a private connection file using ipc
// sockets, and relays the five Jupyter channels between the host's ports
// and the kernel, so the kernel needs no network at all.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "apply/client_watch.hpp"
#include "apply/exec.hpp"
#include "apply/exit_reason.hpp"
#include "apply/limits.hpp"
#include "apply/monitor.hpp"
#include "apply/sandbox.hpp"
#include "apply/shutdown_watch.hpp"
#include "common/log.hpp"
#include "common/report_error.hpp"
#include "kernelspec/launch.hpp"
#include "parse/cli.hpp"
#include "parse/json_text.hpp"
#include "parse/usage_formatter.hpp"
#include "parse/units.hpp"
#include "plan/host.hpp"
#include "plan/paths.hpp"
#include "plan/planner.hpp"
#include "pool/claim.hpp"
#include "pool/helper.hpp"
#include "relay/connection_file.hpp"
#include "relay/exit_notice.hpp"
#include "relay/kernel_sockets.hpp"
#include "relay/relay.hpp"
#include "relay/stdio_pump.hpp"

extern char** environ;

namespace {

constexpr const char* kDescription =
    "Start a Jupyter kernel in the isolate sandbox and relay its five ZeroMQ channels (shell, control,\n"
    "stdin, iopub, heartbeat) between the ports of CONNECTION_FILE on the host and the kernel, which\n"
    "runs with no network (only lo) and a private copy of the connection file that uses ipc sockets.\n"
    "Used as argv[0] of a kernelspec: isolated-kernel-launcher [options] -- python3 -m ipykernel_launcher\n"
    "-f {connection_file}. Takes every sandbox option of `isolate`. Exits with the kernel's status.\n"
    "Stops the kernel when the client that started it (JPY_PARENT_PID, else the parent) is gone, and tells\n"
    "the clients on iopub why a kernel died of a limit or a signal (\"Kernel stopped: ...\"); a kernel that\n"
    "answered shutdown_request but then idles 0.5 s instead of exiting is killed (exit 0). A kernelspec with\n"
    "metadata.isolated_kernel.pool (install --pool N) takes a waiting sandbox from `isolated-kernel pool`;\n"
    "any failure to claim one is a cold start (-v says which, and why).";

struct LauncherArgs {
  std::string connection_file;
  std::string max_message_size;
  pid_t parent_at_start = 0;  // getppid() first thing in main, for the client watch
  int pool_helper_fd = -1;    // --pool-helper FD: build a waiting sandbox for the pool daemon
  std::vector<std::string> raw_args;  // argv[1..], the pool's template of this kernelspec
};

int fail(const ik::Error& e) { return ik::print_error(e); }

void report_end(const ik::Monitor& m, const ik::SandboxProcess& sandbox, const ik::Plan& plan) {
  if (m.timed_out())
    std::fprintf(stderr, "isolated-kernel-launcher: kernel killed after the wall-time limit of %llus (--wall-time)\n",
                 static_cast<unsigned long long>(*plan.limits.wall_seconds));
  if (auto why = ik::explain_limit_exit(plan, m.exit_status(), sandbox.limit_events(), m.timed_out()); !why.empty())
    std::fprintf(stderr, "isolated-kernel-launcher: kernel: %s\n", why.c_str());
}

// Tells the kernel's iopub clients why it died (a limit, a signal), so the
// running cell shows it instead of a bare "kernel died". Not after a normal
// end, nor when the kernel was stopped because its client is gone.
void tell_clients_why(ik::relay::Relay& relay, const ik::relay::ConnectionInfo& conn, const ik::Monitor& m,
                      const ik::SandboxProcess& sandbox, const ik::Plan& plan) {
  const std::string why = ik::kernel_exit_reason(plan, m.exit_status(), sandbox.limit_events(), m.timed_out());
  if (why.empty()) return;
  auto wire = ik::relay::exit_notice_wire(conn, relay.last_execute_header(), why);
  if (!wire) {
    ik::log::warn("could not tell the clients why the kernel stopped: %s", wire.error().describe().c_str());
    return;
  }
  const size_t n = relay.publish_to_iopub(*wire, std::chrono::milliseconds(250));
  ik::log::step("told %zu iopub client(s): Kernel stopped: %s", n, why.c_str());
}

// The sandbox's directory that holds the kernel's ipc sockets, opened once
// through the sandbox's root: socket files work across network namespaces,
// and nothing lands on the host.
ik::Result<ik::UniqueFd> open_kernel_socket_dir(const ik::SandboxProcess& sandbox) {
  // Our fd of the sandbox's root, handed over by its init before it made
  // itself non-dumpable (/proc/<init>/root is closed to us).
  const std::string dir = std::filesystem::path(ik::kKernelIpcBase).parent_path().relative_path();
  return ik::relay::open_sandbox_dir(sandbox.root_fd(), dir);
}

// Each client connection holds two fds; the usual soft limit of 1024 would
// cap the relay well below its connection limit. Raised after the sandbox
// is cloned, so the kernel keeps the caller's (or --nofile's) limit.
void raise_fd_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= lim.rlim_max) return;
  const rlim_t want = std::min<rlim_t>(lim.rlim_max, 16384);
  if (want <= lim.rlim_cur) return;
  lim.rlim_cur = want;
  if (setrlimit(RLIMIT_NOFILE, &lim) == 0) ik::log::step("relay: fd limit raised to %llu", static_cast<unsigned long long>(want));
}

// Relays until the sandbox exits; returns its exit status.
int run_with_relay(ik::SandboxProcess& sandbox, ik::StdioPump& pump, const ik::relay::ConnectionInfo& host_conn,
                   ik::relay::RelayOptions relay_options, const ik::Options& opts, const ik::Plan& plan,
                   ik::ClientWatch& client) {
  auto monitor = ik::Monitor::create(sandbox, opts.limits.wall_seconds);
  if (!monitor) return fail(monitor.error());
  // A kernel that answered shutdown_request but does not exit is ended
  // (ipykernel's shutdown deadlock: see apply/shutdown_watch.hpp).
  auto shutdown_watch = ik::ShutdownWatch::create();
  if (!shutdown_watch) return fail(shutdown_watch.error());
  relay_options.on_shutdown_reply = [&] { shutdown_watch->arm(sandbox.program_pid()); };
  auto dir = open_kernel_socket_dir(sandbox);
  if (!dir) {
    ik::print_error(dir.error());
    sandbox.signal(SIGKILL);
    monitor->run();
    return ik::kExitSetup;
  }
  raise_fd_limit();
  const std::string prefix = std::filesystem::path(ik::kKernelIpcBase).filename();
  auto relay = ik::relay::Relay::create(host_conn, {dir->get(), prefix}, relay_options);
  if (!relay) {
    ik::print_error(relay.error());
    sandbox.signal(SIGKILL);
    monitor->run();
    return relay.error().exit_code;
  }
  // The kernel's stdout/stderr pipes, the client watch and the shutdown
  // watch are served in the same loop.
  std::vector<int> fds = monitor->fds();
  fds.push_back(pump.fd());
  fds.push_back(shutdown_watch->fd());
  for (int fd : client.fds()) fds.push_back(fd);
  auto status = (*relay)->run(fds, [&](int fd) {
    if (fd == pump.fd()) {
      pump.on_ready();
      return true;
    }
    if (fd == shutdown_watch->fd()) {
      shutdown_watch->on_ready(sandbox);
      return true;
    }
    return client.on_ready(fd, sandbox) || monitor->on_ready(fd);
  });
  if (!status) {
    ik::print_error(status.error());
    sandbox.signal(SIGKILL);
    return monitor->run();
  }
  pump.finish();  // the kernel's last words before our own
  if (ik::log::verbose()) ik::log::step("relay totals:\n%s", (*relay)->describe_counters().c_str());
  // Killed by the watch after a completed shutdown: report the status the
  // deadlocked kernel would have exited with after its flush timeout.
  if (shutdown_watch->ended_kernel() && monitor->exit_status() == 128 + SIGKILL) return 0;
  report_end(*monitor, sandbox, plan);
  if (!client.stopping()) tell_clients_why(**relay, host_conn, *monitor, sandbox, plan);
  return monitor->exit_status();
}

int run(ik::Options& opts, const LauncherArgs& args) {
  auto host = ik::read_host_info(environ, ik::cgroup_probe_needed(opts.limits, opts.limits_via));
  if (!host) return fail(host.error());
  std::string conn_path = args.connection_file.empty() ? ik::find_connection_file(opts.argv) : args.connection_file;
  if (conn_path.empty())
    return fail(ik::usage_error("no connection file", "pass -f CONNECTION_FILE, or -f {connection_file} in the kernel argv"));
  if (opts.argv.empty())
    return fail(ik::usage_error("no kernel command", "e.g. -- python3 -m ipykernel_launcher -f {connection_file}"));
  conn_path = ik::absolute_path(conn_path, host->cwd);
  auto conn = ik::relay::read_connection_file(conn_path);
  if (!conn) return fail(conn.error());

  ik::relay::RelayOptions relay_options;
  if (!args.max_message_size.empty()) {
    auto size = ik::parse_size(args.max_message_size, "--max-message-size");
    if (!size) return fail(size.error());
    relay_options.max_message_bytes = *size;
  }
  // With a shared network and tcp, the kernel binds the host ports itself.
  const bool use_relay = !(opts.net == ik::NetMode::kShare && conn->transport == "tcp");
  std::string kernel_conn =
      use_relay ? ik::relay::kernel_side_connection(*conn, ik::kKernelIpcBase).dump(2) : conn->raw.dump(2);
  ik::drop_connection_file_mounts(opts, conn_path, host->cwd, host->home);
  auto plan = ik::build_plan(opts, *host, ik::kernel_ops(conn_path, kernel_conn, use_relay, host->cwd));
  if (!plan) return fail(plan.error());
  if (opts.print_plan) {
    std::cout << ik::display_json(ik::plan_to_json(*plan)) << std::endl;
    return 0;
  }
  // Warm pool (docs/pool.md): a waiting sandbox built from this same plan;
  // any failure to claim one is a cold start.
  if (opts.pool > 0 && use_relay) {
    auto status = ik::pool::try_claim({opts, *host, *plan, conn_path, args.raw_args, args.parent_at_start});
    if (status) return *status;
  }
  // Before the sandbox exists: a client already gone gets no kernel.
  auto client = ik::ClientWatch::open(std::getenv("JPY_PARENT_PID"), args.parent_at_start);
  if (client.gone_at_start()) {
    ik::log::warn("client process %d is gone: not starting the kernel", static_cast<int>(client.pid()));
    return ik::kExitSetup;
  }
  if (auto s = ik::block_sandbox_signals(); !s) return fail(s.error());
  // The kernel never gets our stdio (the Jupyter server's log, a terminal):
  // reopened through /proc/self/fd it would be readable and writable from
  // inside. It writes into pipes that we copy out (docs/security.md).
  auto stdio = ik::ChildStdio::create();
  if (!stdio) return fail(stdio.error());
  auto sandbox = ik::spawn_sandbox(*plan, &*stdio);
  if (!sandbox) {
    ik::Error e = ik::with_not_found_hint(sandbox.error(), host->env);
    return fail(e);
  }
  auto pump = ik::StdioPump::create(*stdio);
  if (!pump) return fail(pump.error());
  int status = 0;
  if (!use_relay) {
    auto monitor = ik::Monitor::create(*sandbox, opts.limits.wall_seconds);
    if (!monitor) return fail(monitor.error());
    status = ik::run_monitor_polling(
        *monitor,
        [&] {
          std::vector<int> fds = client.fds();
          fds.push_back((*pump)->fd());
          return fds;
        },
        [&](int fd) {
          if (fd == (*pump)->fd()) (*pump)->on_ready();
          else client.on_ready(fd, *sandbox);
        });
    (*pump)->finish();
    report_end(*monitor, *sandbox, *plan);
  } else {
    status = run_with_relay(*sandbox, **pump, *conn, relay_options, opts, *plan, client);
  }
  if (ik::log::verbose()) ik::log::step("kernel stdio totals:\n%s", (*pump)->describe().c_str());
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  LauncherArgs args;
  args.parent_at_start = getppid();  // first: the later, the likelier a reparenting goes unseen
  ik::log::set_program("isolated-kernel-launcher");
  CLI::App app(kDescription, "isolated-kernel-launcher");
  app.set_version_flag("--version", IK_VERSION);
  app.formatter(std::make_shared<ik::UsageFormatter>("isolated-kernel-launcher [OPTIONS] [-f CONNECTION_FILE] -- KERNEL_ARGV..."));
  ik::SandboxCli cli(app);
  app.add_option("-f,--connection-file", args.connection_file,
                 "The connection file jupyter_client wrote (default: the -f argument of the kernel argv)")
      ->type_name("FILE");
  app.add_option("--max-message-size", args.max_message_size,
                 "Largest message accepted from the kernel (default 256M); a larger one cuts that client connection")
      ->type_name("SIZE");
  app.add_option("--pool-helper", args.pool_helper_fd, "internal: used by the pool daemon")->group("");
  app.footer("Example kernel.json argv:\n  [\"isolated-kernel-launcher\", \"--mnt\", \"ro:/opt/conda\", \"--\",\n"
             "   \"/opt/conda/bin/python\", \"-m\", \"ipykernel_launcher\", \"-f\", \"{connection_file}\"]\n"
             "Install one with: isolated-kernel install. Docs: man isolated-kernel-launcher; " IK_DOCDIR "/config.md");
  auto split = ik::split_command(app, ik::arguments(argc, argv));
  if (int rc = ik::parse_options(app, split.options, "isolated-kernel-launcher"); rc >= 0) return rc;
  ik::Options opts;
  opts.argv = split.command;
  if (auto s = cli.finish(opts, std::getenv("MNTDIRS")); !s) return fail(s.error());
  ik::log::set_verbose(opts.verbose);
  if (args.pool_helper_fd >= 0) {
    ik::relay::RelayOptions relay_options;
    if (!args.max_message_size.empty()) {
      auto size = ik::parse_size(args.max_message_size, "--max-message-size");
      if (!size) return fail(size.error());
      relay_options.max_message_bytes = *size;
    }
    return ik::pool::run_helper(opts, args.pool_helper_fd,
                                [&](ik::SandboxProcess& sandbox, ik::StdioPump& pump, const ik::relay::ConnectionInfo& conn,
                                    const ik::Plan& plan, ik::ClientWatch& client) {
                                  return run_with_relay(sandbox, pump, conn, relay_options, opts, plan, client);
                                });
  }
  args.raw_args = ik::arguments(argc, argv);
  return run(opts, args);
}
