#include "pool/claim.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "apply/client_watch.hpp"
#include "apply/init.hpp"
#include "apply/monitor.hpp"
#include "common/log.hpp"
#include "plan/planner.hpp"
#include "pool/proto.hpp"
#include "pool/split.hpp"

namespace ik::pool {

namespace {

constexpr int kClaimTimeoutMs = 10000;

// Starts `isolated-kernel pool start` (next to us) detached: a double fork,
// so nothing of it is our child.
void start_daemon() {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return;
  std::string prog(exe, static_cast<size_t>(n));
  prog = prog.substr(0, prog.rfind('/')) + "/isolated-kernel";
  pid_t child = fork();
  if (child < 0) return;
  if (child == 0) {
    if (fork() != 0) _exit(0);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    dup2(null, 0), dup2(null, 1), dup2(null, 2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execl(prog.c_str(), prog.c_str(), "pool", "start", "--quiet", static_cast<char*>(nullptr));
    _exit(127);
  }
  while (waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
  }
}

nlohmann::json env_object(const std::vector<std::string>& env, bool drop_launch_time) {
  nlohmann::json o = nlohmann::json::object();
  for (const auto& kv : env) {
    const size_t eq = kv.find('=');
    const std::string name = kv.substr(0, eq);
    if (drop_launch_time && launch_time_env(name)) continue;
    o[name] = eq == std::string::npos ? "" : kv.substr(eq + 1);
  }
  return o;
}

// Ours, which a cold sandbox and its kernel inherit; a waiting sandbox has
// the daemon's. Reading it means setting it: we are single-threaded here.
unsigned launch_umask() {
  const mode_t m = umask(022);
  umask(m);
  return m;
}

std::vector<std::string> host_env(const HostInfo& host) {
  std::vector<std::string> out;
  for (const auto& [k, v] : host.env) out.push_back(k + "=" + v);
  return out;
}

// After the claim: we stand in for the kernel as a cold launcher does for
// signals and the client; the helper relays and reports the exit status.
int follow_claimed_kernel(int sock, pid_t program, pid_t parent_at_start) {
  sigset_t sigs = forwarded_signals();
  UniqueFd sigfd(signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK));
  const pid_t client = client_pid(std::getenv("JPY_PARENT_PID"), parent_at_start);
  UniqueFd client_fd(client > 1 ? static_cast<int>(syscall(SYS_pidfd_open, client, 0)) : -1);
  std::optional<std::chrono::steady_clock::time_point> give_up;
  for (;;) {
    pollfd fds[3] = {{sock, POLLIN, 0}, {sigfd.get(), POLLIN, 0}, {client_fd.get(), POLLIN, 0}};
    int timeout = -1;
    if (give_up)
      timeout = static_cast<int>(std::max<long long>(
          0,
          std::chrono::duration_cast<std::chrono::milliseconds>(*give_up - std::chrono::steady_clock::now()).count()));
    int n = poll(fds, 3, timeout);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 && give_up) return 128 + SIGTERM;  // the helper sees us gone and SIGKILLs the sandbox
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo si{};
      while (read(sigfd.get(), &si, sizeof si) == sizeof si)
        if (program > 0) kill(-program, static_cast<int>(si.ssi_signo));  // straight to the kernel's group, as cold
    }
    if (fds[2].revents & POLLIN) {
      log::warn("client process %d is gone: stopping the kernel", static_cast<int>(client));
      if (program > 0) kill(-program, SIGTERM);
      client_fd.reset();
      give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(ClientWatch::kGraceMs);
    }
    if (fds[0].revents) {
      auto m = recv_message(sock);
      if (!m) {
        log::warn("pool: the pooled kernel's helper ended without an exit status");
        return kExitSetup;
      }
      if (m->body.contains("exit")) return m->body["exit"].get<int>();
    }
  }
}

}  // namespace

std::optional<int> try_claim(const ClaimInput& in) {
  const auto cold = [](const std::string& why) -> std::optional<int> {
    log::step("pool: cold start: %s", why.c_str());
    return std::nullopt;
  };
  auto waiter = waiter_source();
  if (!waiter) return cold(waiter.error().describe());
  auto waiting = build_plan(in.opts, in.host, waiting_extra_ops());
  if (!waiting) return cold(waiting.error().describe());
  std::error_code ec;
  strip_launch_parts(*waiting, std::filesystem::canonical(in.host.cwd, ec).string());
  waiting->argv = argv_template(in.cold_plan.argv, in.connection_file);
  auto ops = launch_ops(in.cold_plan, *waiting);
  if (!ops) return cold(ops.error().describe());
  const std::string key = pool_key(*waiting, *waiter, in.opts.pool_preload);

  const std::string dir = socket_dir();
  auto sock = connect_daemon(dir);
  if (!sock) {
    if (sock.error().err == ENOENT || sock.error().err == ECONNREFUSED) {
      log::step("pool: no pool daemon for this user: starting one (isolated-kernel pool start)");
      start_daemon();
    }
    return cold(sock.error().describe());
  }
  if (auto s = block_sandbox_signals(); !s) return cold(s.error().describe());
  nlohmann::json launch = nlohmann::json::array();
  for (const auto& op : *ops) launch.push_back(op_to_json(op));
  nlohmann::json claim{{"op", "claim"},
                       {"spec", argv_template(in.launcher_args, in.connection_file)},
                       {"env", env_object(host_env(in.host), true)},
                       {"cwd", in.host.cwd},
                       {"size", in.opts.pool},
                       {"key", key},
                       {"launch_ops", launch},
                       {"tmpfs_size", in.cold_plan.tmpfs_size},
                       {"kernel",
                        {{"argv", in.cold_plan.argv},
                         {"env", env_object(in.cold_plan.env, false)},
                         {"cwd", in.cold_plan.cwd},
                         {"umask", launch_umask()},
                         {"connection_file", in.connection_file}}},
                       {"launcher_pid", getpid()}};
  // Set by `isolated-kernel run` (pool/run_hold.hpp): claim from the run's own pool.
  if (const char* run = std::getenv("IK_POOL_RUN"); run && *run) claim["run"] = run;
  const auto started = std::chrono::steady_clock::now();
  std::vector<int> fds{STDOUT_FILENO, STDERR_FILENO};
  if (in.listeners)
    for (int fd : in.listeners->fds()) fds.push_back(fd);
  if (auto s = send_message(sock->get(), claim, fds); !s) return cold(s.error().describe());
  pollfd p{sock->get(), POLLIN, 0};
  if (poll(&p, 1, kClaimTimeoutMs) <= 0) return cold("the pool did not answer in time");
  auto reply = recv_message(sock->get());
  if (!reply) return cold(reply.error().describe());
  if (!reply->body.value("ok", false)) return cold(reply->body.value("reason", std::string("refused")));
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
  const pid_t program = reply->body.value("program_pid", -1);
  if (in.listeners) in.listeners->close_all();  // the helper's relay holds the ports now
  log::step("pool: claimed a waiting sandbox in %.1f ms (kernel pid %d)", us.count() / 1000.0,
            static_cast<int>(program));
  return follow_claimed_kernel(sock->get(), program, in.parent_at_start);
}

}  // namespace ik::pool
