#include "relay/kernel_run.hpp"

#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "apply/exit_reason.hpp"
#include "apply/host_events.hpp"
#include "common/log.hpp"
#include "common/print_error.hpp"
#include "relay/exit_notice.hpp"
#include "relay/kernel_sockets.hpp"

namespace ik {

namespace {

// The sandbox's directory that holds the kernel's ipc sockets, opened once
// through the sandbox's root: socket files work across network namespaces,
// and nothing lands on the host.
Result<UniqueFd> open_kernel_socket_dir(const SandboxProcess& sandbox, const std::string& ipc_base) {
  // Our fd of the sandbox's root, handed over by its init before it made
  // itself non-dumpable (/proc/<init>/root is closed to us).
  const std::string dir = std::filesystem::path(ipc_base).parent_path().relative_path();
  return relay::open_sandbox_dir(sandbox.root_fd(), dir);
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
  if (setrlimit(RLIMIT_NOFILE, &lim) == 0)
    log::step("relay: fd limit raised to %llu", static_cast<unsigned long long>(want));
}

}  // namespace

std::optional<int> KernelHooks::before_start() {
  // Before the sandbox exists: a client already gone gets no kernel.
  // The pool's helper is told its client (the claiming launcher, not an ancestor).
  const bool from_env = settings_.client_pid.empty();
  const char* client_pid = from_env ? std::getenv("JPY_PARENT_PID") : settings_.client_pid.c_str();
  client_.emplace(ClientWatch::open(client_pid, settings_.parent_at_start, from_env));
  if (!client_->gone_at_start()) return std::nullopt;
  log::warn("client process %d is gone: not starting the kernel", static_cast<int>(client_->pid()));
  return kExitSetup;
}

Ending KernelHooks::run(Running& r) {
  // The kernel writes into pipes that we copy out (docs/security.md).
  auto pump = StdioPump::create(*r.stdio);
  if (!pump) return {print_error(pump.error()), false};
  pump_ = std::move(*pump);
  if (settings_.use_relay) return run_relay(r);
  // With a shared network and tcp, the kernel binds the host ports itself:
  // no relay, the same sources in the monitor's poll loop.
  HostEvents events(r.monitor, r.sandbox);
  events.add(*client_);
  events.add(*pump_);
  const int status = events.poll_until_exit();
  pump_->finish();
  return {status};
}

// Relays until the sandbox exits.
Ending KernelHooks::run_relay(Running& r) {
  // A kernel that answered shutdown_request but does not exit is ended
  // (ipykernel's shutdown deadlock: see apply/shutdown_watch.hpp).
  auto watch = ShutdownWatch::create();
  if (!watch) return {print_error(watch.error()), false};
  shutdown_watch_.emplace(std::move(*watch));
  relay::RelayOptions options = settings_.relay_options;
  options.on_shutdown_reply = [this, &r] { shutdown_watch_->arm(r.sandbox.program_pid()); };
  auto dir = open_kernel_socket_dir(r.sandbox, settings_.kernel_ipc_base);
  if (!dir) {
    r.abandon(dir.error());
    return {kExitSetup, false};
  }
  raise_fd_limit();
  const std::string prefix = std::filesystem::path(settings_.kernel_ipc_base).filename();
  auto relay = relay::Relay::create(settings_.host_conn, {dir->get(), prefix}, options);
  if (!relay) {
    r.abandon(relay.error());
    return {relay.error().exit_code, false};
  }
  relay_ = std::move(*relay);
  // The kernel's stdout/stderr pipes, the shutdown watch and the client
  // watch are served in the relay's loop.
  HostEvents events(r.monitor, r.sandbox);
  events.add(*pump_);
  events.add(*shutdown_watch_);
  events.add(*client_);
  auto status = relay_->run(events.fds(), [&](int fd) { return events.on_ready(fd); });
  if (!status) return {r.abandon(status.error()), false};
  pump_->finish();  // the kernel's last words before our own
  if (log::verbose()) log::step("relay totals:\n%s", relay_->describe_counters().c_str());
  // After a completed shutdown (the kernel's reply seen): killed by the
  // watch, or aborted in ipykernel's teardown race, counts as that shutdown.
  // An abort whose reply never got out (still in the kernel's libzmq queue)
  // counts too, after a client's shutdown_request.
  const int exited = r.monitor.exit_status();
  if (const int st = shutdown_watch_->reported_status(exited, relay_->shutdown_requested()); st != exited)
    return {st, false};
  return {r.monitor.exit_status()};
}

void KernelHooks::after_end(Running& r, const Ending& end) {
  if (end.explain && relay_ && !client_->stopping()) tell_clients_why(r);
  if (pump_ && log::verbose()) log::step("kernel stdio totals:\n%s", pump_->describe().c_str());
  // Closed before the sandbox is released (reaped, its cgroup removed):
  // the host ports and ipc socket files go first, as the kernel did.
  relay_.reset();
  pump_.reset();
}

// Tells the kernel's iopub clients why it died (a limit, a signal), so the
// running cell shows it instead of a bare "kernel died". Not after a normal
// end, nor when the kernel was stopped because its client is gone.
void KernelHooks::tell_clients_why(const Running& r) {
  const std::string why =
      kernel_exit_reason(r.plan, r.monitor.exit_status(), r.sandbox.limit_events(), r.monitor.timed_out());
  if (why.empty()) return;
  auto wire = relay::exit_notice_wire(settings_.host_conn, relay_->last_execute_header(), why);
  if (!wire) {
    log::warn("could not tell the clients why the kernel stopped: %s", wire.error().describe().c_str());
    return;
  }
  const size_t n = relay_->publish_to_iopub(*wire, std::chrono::milliseconds(250));
  log::step("told %zu iopub client(s): Kernel stopped: %s", n, why.c_str());
}

}  // namespace ik
