#include "pool/helper.hpp"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "apply/monitor.hpp"
#include "common/log.hpp"
#include "apply/lifecycle.hpp"
#include "common/print_error.hpp"
#include "host/read_host.hpp"
#include "kernel/launch.hpp"
#include "plan/host.hpp"
#include "plan/planner.hpp"
#include "pool/cpu_cgroup.hpp"
#include "pool/demand.hpp"
#include "pool/priority.hpp"
#include "pool/proto.hpp"
#include "pool/split.hpp"
#include "relay/hmac.hpp"
#include "relay/kernel_run.hpp"
#include "relay/kernel_sockets.hpp"
#include "relay/prebound.hpp"

extern char** environ;

namespace ik::pool {

namespace {

// A busy machine can take a while to import ipykernel, and a refill runs at
// autogroup nice 19 (pool/priority.hpp): it gets little CPU while others run.
constexpr int kWaiterStartMs = 600000;
// How long a ready helper retries raising its autogroup to nice 0 before it
// reports ready anyway (then the claim raises it, pool/priority.hpp).
constexpr int kReadyRaiseRetryMs = 5000;

// The last non-empty line the waiter wrote to its stderr (non-blocking pipe),
// e.g. "ModuleNotFoundError: No module named 'x'" from a pool_preload.
std::string last_stderr_line(int err_fd) {
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(err_fd, buf, sizeof buf)) > 0;) {
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > 65536) text.erase(0, text.size() - 16384);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  const size_t nl = text.rfind('\n');
  return nl == std::string::npos ? text : text.substr(nl + 1);
}

// Dials the waiter's claim socket until it accepts, the sandbox dies, or
// the daemon hangs up. ERR_FD: the waiter's stderr, quoted when it dies.
Result<UniqueFd> dial_waiter(const SandboxProcess& sandbox, int ctl_fd, int err_fd) {
  const std::string dir = std::filesystem::path(kKernelRuntimeDir).relative_path();
  auto dfd = relay::open_sandbox_dir(sandbox.root_fd(), dir);
  if (!dfd) return dfd.error();
  auto socks = relay::KernelSockets::open(dfd->get(), "pool");
  if (!socks) return socks.error();
  for (int waited = 0; waited < kWaiterStartMs;) {
    auto out = socks->dial(0);
    if (out.dial == relay::KernelSockets::Dial::kConnected) return std::move(out.fd);
    if (out.dial == relay::KernelSockets::Dial::kRejected)
      return Error{"pool: waiter socket", 0, out.why, {}, kExitSetup};
    pollfd fds[3] = {{socks->watch_fd(), POLLIN, 0}, {sandbox.pidfd(), POLLIN, 0}, {ctl_fd, POLLIN, 0}};
    const int step = out.dial == relay::KernelSockets::Dial::kNotListening ? 10 : 1000;
    int n = poll(fds, 3, step);
    waited += step;  // an upper bound is all we need
    if (n < 0 && errno != EINTR) return sys_error("pool: poll");
    if (fds[1].revents) {
      const std::string said = last_stderr_line(err_fd);
      return Error{
          "pool: the waiter exited before it was ready" + (said.empty() ? "" : ": " + said), 0, {}, {}, kExitSetup};
    }
    if (fds[2].revents) return Error{"pool: the daemon hung up", 0, {}, {}, kExitSetup};
    if (fds[0].revents) socks->drain_watch();
  }
  return Error{"pool: the waiter did not get ready in time", 0, {}, {}, kExitSetup};
}

Status send_line(int fd, const std::string& line) {
  for (size_t off = 0; off < line.size();) {
    pollfd p{fd, POLLOUT, 0};
    poll(&p, 1, 1000);
    ssize_t n = write(fd, line.data() + off, line.size() - off);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) return sys_error("pool: write to the waiter");
    off += static_cast<size_t>(n);
  }
  return ok();
}

Status wait_ok(int fd) {
  std::string got;
  for (int tries = 0; tries < 100 && got.find('\n') == std::string::npos; ++tries) {
    pollfd p{fd, POLLIN, 0};
    poll(&p, 1, 100);
    char buf[16];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n > 0) got.append(buf, static_cast<size_t>(n));
  }
  // "no REASON": the waiter's imports could differ from a cold start's
  // with this claim (share/pool/pool_waiter.py); the launcher starts cold.
  if (got.rfind("no ", 0) == 0)
    return Error{"pool: the waiter refused the claim", 0, got.substr(3, got.find('\n') - 3), {}, kExitSetup};
  if (got != "ok\n") return Error{"pool: the waiter did not take the claim", 0, {}, {}, kExitSetup};
  return ok();
}

int fail_to_daemon(int ctl_fd, const Error& e) {
  (void)send_message(ctl_fd, {{"error", e.describe()}});
  return print_error(e);
}

}  // namespace

int run_helper(Options& opts, int ctl_fd, const relay::RelayOptions& relay_options) {
  // Low CPU priority for this session (us, the sandbox, its waiter) until
  // the sandbox is ready (pool/priority.hpp), unless the pool is behind its
  // demand (pool/demand.hpp).
  const int nice = take_normal_refill_request() ? own_autogroup_nice() : lower_refill_priority();
  auto waiter = waiter_source();
  if (!waiter) return fail_to_daemon(ctl_fd, waiter.error());
  auto host = read_host_info(environ, cgroup_probe_needed(opts.limits, opts.limits_via));
  if (!host) return fail_to_daemon(ctl_fd, host.error());
  // The same plan as a cold start of this kernelspec, minus the launch.
  auto plan = build_plan(opts, *host, waiting_extra_ops());
  if (!plan) return fail_to_daemon(ctl_fd, plan.error());
  std::error_code ec;
  strip_launch_parts(*plan, std::filesystem::canonical(host->cwd, ec).string());
  const std::string key = pool_key(*plan, *waiter, opts.pool_preload);
  // Load libcrypto now, in the fill, not at the claimed kernel's first
  // signed message: its relocations are ~1 ms (relay/hmac.hpp).
  (void)relay::hmac_hex("hmac-sha256", "isolated-kernel-pool", {key});
  const Plan kernel_plan = *plan;  // what the running step explains limits with
  plan->argv = {plan->argv[0], "-c", *waiter};
  // The waiter imports these after ipykernel (names checked: parse/config.cpp).
  plan->argv.insert(plan->argv.end(), opts.pool_preload.begin(), opts.pool_preload.end());
  if (auto s = block_sandbox_signals(); !s) return fail_to_daemon(ctl_fd, s.error());
  // Where autogroups do not apply: a low-weight cpu cgroup (pool/cpu_cgroup.hpp).
  const bool in_refill_cgroup = enter_refill_cgroup(plan->cgroup.use);
  auto stdio = ChildStdio::create();
  if (!stdio) return fail_to_daemon(ctl_fd, stdio.error());
  auto sandbox = spawn_sandbox(*plan, &*stdio);
  if (!sandbox) return fail_to_daemon(ctl_fd, sandbox.error());
  auto waiter_fd = dial_waiter(*sandbox, ctl_fd, stdio->err_read.get());
  if (!waiter_fd) return fail_to_daemon(ctl_fd, waiter_fd.error());
  // Ready: the waiter sleeps in accept() and the fill's CPU is spent, so the
  // autogroup goes back to nice 0 now rather than at the claim. The kernel
  // lets an unprivileged writer change one autogroup per 100 ms system-wide;
  // with other pools refilling (every user's daemon on a shared server) a
  // write at the claim can wait several such windows while the claimed
  // kernel initialises at nice 19 (profiled: 0.2-0.5 s stalls at load 9).
  // Waiting here costs nothing; the claim's own write stays as the fallback.
  if (nice > 0) (void)set_own_autogroup_nice(0, kReadyRaiseRetryMs);
  if (auto s = send_message(ctl_fd, {{"ready", true},
                                     {"key", key},
                                     {"init_pid", sandbox->pid()},
                                     {"program_pid", sandbox->program_pid()},
                                     {"tmpfs_size", plan->tmpfs_size},
                                     {"uid", plan->id.inner_uid},
                                     {"gid", plan->id.inner_gid},
                                     {"nice", nice}});  // what the fill ran at
      !s)
    return print_error(s.error());

  // Waiting: the daemon's claim, its hang-up (stop, idle, kill -9: the
  // sandbox goes with us), or the sandbox's end.
  pollfd fds[2] = {{ctl_fd, POLLIN, 0}, {sandbox->pidfd(), POLLIN, 0}};
  while (poll(fds, 2, -1) < 0 && errno == EINTR) {
  }
  if (fds[1].revents) return kExitSetup;
  auto claim = recv_message(ctl_fd);
  // [launcher connection, stdout, stderr] and optionally the five host
  // ports the launcher bound first thing (relay/prebound.hpp).
  if (!claim || (claim->fds.size() != 3 && claim->fds.size() != 8)) return kExitSetup;
  UniqueFd launcher(std::move(claim->fds[0]));
  if (!claim->body.contains("kernel") || !claim->body["kernel"].is_object()) return kExitSetup;
  NormalPriorityAtClaim normal_priority;  // the kernel and its relay: nice 0 again
  if (in_refill_cgroup) leave_refill_cgroup({getpid(), sandbox->pid(), sandbox->program_pid()});
  const nlohmann::json& k = claim->body["kernel"];
  const auto refuse = [&](const Error& e) {
    (void)send_message(launcher.get(), {{"ok", false}, {"reason", e.describe()}});
    return kExitSetup;
  };
  auto conn = relay::read_connection_file(k.value("connection_file", std::string()));
  if (!conn) return refuse(conn.error());
  // The waiter runs what follows the interpreter in the claim's kernel
  // argv (the template with this launch's connection file).
  std::vector<std::string> argv;
  try {
    argv = k.at("argv").get<std::vector<std::string>>();
  } catch (const std::exception& e) {
    return refuse(Error{"pool: bad claim", 0, e.what(), {}, kExitSetup});
  }
  if (argv.empty()) return refuse(Error{"pool: bad claim", 0, "no kernel argv", {}, kExitSetup});
  nlohmann::json go{{"argv", std::vector<std::string>(argv.begin() + 1, argv.end())},
                    {"env", k.value("env", nlohmann::json::object())},
                    {"cwd", k.value("cwd", std::string("/"))}};
  if (k.contains("umask")) go["umask"] = k["umask"];  // the launch's, as a cold kernel inherits it
  if (auto s = send_line(waiter_fd->get(), go.dump() + "\n"); !s) return refuse(s.error());
  if (auto s = wait_ok(waiter_fd->get()); !s) return refuse(s.error());
  waiter_fd->reset();
  // From here on our stdout and stderr are the claiming launcher's (the
  // Jupyter server's log): the kernel's output is copied there.
  dup2(claim->fds[1].get(), STDOUT_FILENO);
  dup2(claim->fds[2].get(), STDERR_FILENO);
  normal_priority.report_to_launcher();  // a failed raise, under -v
  // We follow the claiming launcher: SIGKILL of it ends the kernel, as cold.
  relay::RelayOptions options = relay_options;
  if (claim->fds.size() == 8) {
    std::vector<UniqueFd> ports;
    for (size_t i = 3; i < 8; ++i) ports.push_back(std::move(claim->fds[i]));
    options.prebound = relay::PreboundListeners::adopt(*conn, std::move(ports));
    log::step("pool: relaying on %zu of the 5 host ports the launcher bound",
              options.prebound ? options.prebound->count() : size_t{0});
  }
  KernelRunSettings settings{*conn, options, true, kKernelIpcBase, 0};
  settings.client_pid = std::to_string(claim->body.value("launcher_pid", 0));
  KernelHooks hooks(std::move(settings));
  if (hooks.before_start()) return kExitSetup;
  if (auto s = send_message(launcher.get(), {{"ok", true}, {"program_pid", sandbox->program_pid()}}); !s)
    return kExitSetup;
  // The forwarded signals were blocked before the spawn (above).
  const int status = run_started_sandbox(StartedSandbox{std::move(*sandbox), std::move(*stdio)}, kernel_plan, hooks);
  (void)send_message(launcher.get(), {{"exit", status}});
  return status;
}

}  // namespace ik::pool
