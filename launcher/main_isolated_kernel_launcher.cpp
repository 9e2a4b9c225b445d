// isolated-kernel-launcher: the argv[0] of an isolated kernelspec. Starts
// the real kernel in the sandbox with a private connection file using ipc
// sockets, and relays the five Jupyter channels between the host's ports
// and the kernel, so the kernel needs no network at all.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "apply/lifecycle.hpp"
#include "common/log.hpp"
#include "common/print_error.hpp"
#include "kernel/launch.hpp"
#include "parse/cli.hpp"
#include "parse/usage_formatter.hpp"
#include "parse/units.hpp"
#include "host/read_host.hpp"
#include "common/paths.hpp"
#include "plan/planner.hpp"
#include "pool/claim.hpp"
#include "pool/helper.hpp"
#include "relay/connection_file.hpp"
#include "relay/kernel_run.hpp"
#include "relay/prebound.hpp"

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
    "answered shutdown_request but then idles 0.5 s instead of exiting is killed (exit 0); one that\n"
    "aborts or segfaults in its teardown after that reply (ipykernel's thread race) also exits 0, noted on stderr.\n"
    "A kernelspec with metadata.isolated_kernel.pool (install --pool N) takes a waiting sandbox from\n"
    "`isolated-kernel pool`; any failure to claim one is a cold start (-v says which, and why).";

struct LauncherArgs {
  std::string connection_file;
  std::string max_message_size;
  pid_t parent_at_start = 0;          // getppid() first thing in main, for the client watch
  int pool_helper_fd = -1;            // --pool-helper FD: build a waiting sandbox for the pool daemon
  std::vector<std::string> raw_args;  // argv[1..], the pool's template of this kernelspec
};

int fail(const ik::Error& e) { return ik::print_error(e); }

// A pooled kernelspec binds the host's tcp ports before anything else, so
// that the client's first connection waits in the backlog instead of being
// refused and retried 100-200 ms later (relay/prebound.hpp). Best effort:
// nullptr, and the relay binds them itself, on any problem.
std::shared_ptr<ik::relay::PreboundListeners> bind_ports_early(const ik::Options& opts, const LauncherArgs& args) {
  if (opts.pool <= 0 || opts.print_plan || opts.net == ik::NetMode::kShare) return nullptr;
  std::string path = args.connection_file.empty() ? ik::find_connection_file(opts.argv) : args.connection_file;
  if (path.empty()) return nullptr;
  std::error_code ec;
  auto conn = ik::relay::read_connection_file(std::filesystem::absolute(path, ec).string());
  return conn ? ik::relay::PreboundListeners::bind(*conn) : nullptr;
}

int run(ik::Options& opts, const LauncherArgs& args) {
  auto early_ports = bind_ports_early(opts, args);
  auto host = ik::read_host_info(environ, ik::cgroup_probe_needed(opts.limits, opts.limits_via));
  if (!host) return fail(host.error());
  std::string conn_path = args.connection_file.empty() ? ik::find_connection_file(opts.argv) : args.connection_file;
  if (conn_path.empty())
    return fail(ik::usage_error("no connection file",
                                "pass -f CONNECTION_FILE, or -f {connection_file} in the kernel argv"));
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
  relay_options.prebound = early_ports;  // a cold start relays on them too
  // With a shared network and tcp, the kernel binds the host ports itself.
  const bool use_relay = !(opts.net == ik::NetMode::kShare && conn->transport == "tcp");
  std::string kernel_conn =
      use_relay ? ik::relay::kernel_side_connection(*conn, ik::kKernelIpcBase).dump(2) : conn->raw.dump(2);
  ik::drop_connection_file_mounts(opts, conn_path, host->cwd, host->home, *host->fs);
  auto plan = ik::build_plan(opts, *host, ik::kernel_ops(conn_path, kernel_conn, use_relay, host->cwd));
  if (!plan) return fail(plan.error());
  // Warm pool (docs/pool.md): a waiting sandbox built from this same plan;
  // any failure to claim one is a cold start.
  if (!opts.print_plan && opts.pool > 0 && use_relay) {
    auto status =
        ik::pool::try_claim({opts, *host, *plan, conn_path, args.raw_args, args.parent_at_start, early_ports});
    if (status) return *status;
  }
  ik::KernelHooks hooks({*conn, relay_options, use_relay, ik::kKernelIpcBase, args.parent_at_start});
  return ik::run_plan(*plan, *host, opts.print_plan, hooks);
}

}  // namespace

int main(int argc, char** argv) {
  LauncherArgs args;
  args.parent_at_start = getppid();  // first: the later, the likelier a reparenting goes unseen
  ik::log::set_program("isolated-kernel-launcher");
  CLI::App app(kDescription, "isolated-kernel-launcher");
  app.set_version_flag("--version", IK_VERSION);
  app.formatter(std::make_shared<ik::UsageFormatter>(
      "isolated-kernel-launcher [OPTIONS] [-f CONNECTION_FILE] -- KERNEL_ARGV..."));
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
    return ik::pool::run_helper(opts, args.pool_helper_fd, relay_options);
  }
  args.raw_args = ik::arguments(argc, argv);
  return run(opts, args);
}
