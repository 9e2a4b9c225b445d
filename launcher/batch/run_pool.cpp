#include "batch/run_pool.hpp"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "kernelspec/subprocess.hpp"
#include "pool/prescan.hpp"
#include "pool/proto.hpp"

namespace ik::batch {

namespace {

// The daemon answers a hold at once; a release once the pool's sandboxes
// are gone (their grace is 3 s, then SIGKILL: pool/run_hold.hpp).
constexpr int kHoldReplyMs = 5000;
constexpr int kReleaseReplyMs = 10000;

std::string random_token() {
  unsigned char b[8] = {};
  UniqueFd fd(open("/dev/urandom", O_RDONLY | O_CLOEXEC));
  if (!fd.valid() || read(fd.get(), b, sizeof b) != static_cast<ssize_t>(sizeof b)) {
  }
  char hex[17];
  for (int i = 0; i < 8; ++i) std::snprintf(hex + 2 * i, 3, "%02x", b[i]);
  return std::to_string(getpid()) + "-" + hex;
}

// The environment the workers' launchers will see: ours plus what the run
// sets, as the Jupyter Python sees it (it may add LC_CTYPE, PEP 538), which
// jupyter_client copies for the kernel.
Result<std::map<std::string, std::string>> launcher_env(const std::map<std::string, std::string>& worker_env,
                                                        const std::string& python) {
  auto out = run_capture({python, "-c", "import json, os, sys; sys.stdout.write(json.dumps(dict(os.environ)))"},
                         worker_env, 30);
  if (!out) return out.error();
  auto j = nlohmann::json::parse(out->out, nullptr, false);
  if (out->status != 0 || !j.is_object())
    return Error{"read the workers' environment with " + python, 0, out->err, {}, kExitSetup};
  std::map<std::string, std::string> env;
  for (const auto& [k, v] : j.items())
    if (v.is_string()) env[k] = v.get<std::string>();
  return env;
}

// A connection to this user's pool daemon, started (`pool start --no-scan`:
// the run wants its own pool, not the installed kernelspecs') if none runs.
Result<UniqueFd> daemon_connection() {
  const std::string dir = pool::socket_dir();
  auto sock = pool::connect_daemon(dir);
  if (sock || (sock.error().err != ENOENT && sock.error().err != ECONNREFUSED)) return sock;
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return sock;
  // Returns once the daemon listens (pool/daemon.cpp, pool_start).
  auto started =
      run_capture({std::string(exe, static_cast<size_t>(n)), "pool", "start", "--quiet", "--no-scan"}, {}, 30);
  if (!started) return started.error();
  return pool::connect_daemon(dir);
}

std::optional<nlohmann::json> reply_within(int sock, int ms) {
  pollfd p{sock, POLLIN, 0};
  if (poll(&p, 1, ms) <= 0) return std::nullopt;
  auto m = pool::recv_message(sock);
  if (!m) return std::nullopt;
  return m->body;
}

}  // namespace

std::vector<std::string> argv_with_options(const std::vector<std::string>& argv,
                                           const std::vector<std::string>& options,
                                           const std::vector<std::string>& override) {
  if (argv.empty() || options.empty()) return argv;
  const size_t end = static_cast<size_t>(std::find(argv.begin(), argv.end(), "--") - argv.begin());
  std::vector<std::string> out{argv[0]};
  for (size_t i = 1; i < end;) {
    const std::string& a = argv[i];
    if (std::find(override.begin(), override.end(), a) != override.end()) {
      i += 2;
      continue;
    }
    if (std::any_of(override.begin(), override.end(), [&](const std::string& o) { return a.rfind(o + "=", 0) == 0; })) {
      ++i;
      continue;
    }
    out.push_back(a);
    ++i;
  }
  out.insert(out.end(), options.begin(), options.end());
  if (end < argv.size()) out.insert(out.end(), argv.begin() + static_cast<long>(end), argv.end());
  return out;
}

RunPool RunPool::open(const KernelspecInfo& spec, const RunOptions& options, int size,
                      const std::map<std::string, std::string>& worker_env, const std::string& python) {
  RunPool rp;
  if (size <= 0 || !spec.spec.contains("argv") || !spec.spec["argv"].is_array()) return rp;
  // What jupyter_client will run for the workers (their spec manager).
  KernelspecInfo k = spec;
  std::vector<std::string> argv;
  for (const auto& a : spec.spec["argv"]) {
    if (!a.is_string()) return rp;
    argv.push_back(a.get<std::string>());
  }
  k.spec["argv"] = argv_with_options(argv, options.kernel_options, options.overrides);
  const std::string token = random_token();
  auto env_in = worker_env;
  env_in["IK_POOL_RUN"] = token;
  std::string problem;
  // Cheap test first: is the kernelspec pooled at all?
  if (!pool::pooled_spec(k, {}, &problem)) {
    if (!problem.empty()) rp.note_ = "no pool for this run: kernelspec " + problem;
    return rp;
  }
  auto env = launcher_env(env_in, python);
  if (!env) {
    rp.note_ = "no pool for this run: " + env.error().describe();
    return rp;
  }
  auto pooled = pool::pooled_spec(k, *env, &problem);
  if (!pooled) return rp;
  auto sock = daemon_connection();
  if (!sock) {
    rp.note_ = "no pool for this run (kernels start cold): " + sock.error().describe();
    return rp;
  }
  nlohmann::json hold{{"op", "hold"}, {"spec", pooled->spec}, {"env", pooled->env}, {"size", size}, {"run", token}};
  if (auto s = pool::send_message(sock->get(), hold); !s) {
    rp.note_ = "no pool for this run (kernels start cold): " + s.error().describe();
    return rp;
  }
  auto reply = reply_within(sock->get(), kHoldReplyMs);
  if (!reply || !reply->value("ok", false)) {
    rp.note_ = "no pool for this run (kernels start cold): " +
               (reply ? reply->value("reason", std::string("refused")) : std::string("the pool daemon did not answer"));
    return rp;
  }
  rp.conn_ = std::move(*sock);
  rp.token_ = token;
  rp.size_ = reply->value("size", size);
  return rp;
}

void RunPool::shrink_to(int size) {
  if (!active() || size >= size_) return;
  size_ = std::max(size, 0);
  (void)pool::send_message(conn_.get(), {{"op", "resize"}, {"size", size_}});
}

std::string RunPool::release() {
  if (!active()) return {};
  UniqueFd conn = std::move(conn_);
  if (auto s = pool::send_message(conn.get(), {{"op", "release"}}); !s) return {};
  auto reply = reply_within(conn.get(), kReleaseReplyMs);
  if (!reply || !reply->value("ok", false))
    return "the run's pool did not confirm its end (the pool daemon stopped or did not answer)";
  const int claimed = reply->value("claimed", 0), refused = reply->value("refused", 0);
  return std::to_string(claimed) + " of " + std::to_string(claimed + refused) +
         " kernels came from the run's pool (the rest started cold); the pool has ended";
}

}  // namespace ik::batch
