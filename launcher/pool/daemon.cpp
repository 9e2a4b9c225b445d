#include "pool/daemon.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

#include "apply/client_watch.hpp"
#include "apply/userns.hpp"
#include "common/log.hpp"
#include "common/print_error.hpp"
#include "host/read_host.hpp"
#include "plan/ids.hpp"
#include "parse/units.hpp"
#include "pool/attach.hpp"
#include "pool/demand.hpp"
#include "pool/lock.hpp"
#include "pool/memory.hpp"
#include "pool/prescan.hpp"
#include "pool/priority.hpp"
#include "pool/cpu_cgroup.hpp"
#include "pool/proto.hpp"
#include "pool/run_hold.hpp"
#include "pool/split.hpp"
#include "pool/wakeup.hpp"

extern char** environ;

namespace ik::pool {

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kExitAlreadyRunning = 3;
constexpr int kRequestWaitMs = 2000;  // from accept to the request (on_connection)
constexpr int kAcceptRetryMs = 100;   // out of descriptors: the listener rests this long (pause_accepting)
constexpr int kMaxFailures = 3;  // helpers in a row that never got ready: that pool stops refilling (Pool::failures)

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// One waiting sandbox: its helper process and their socketpair.
struct Entry {
  pid_t helper = -1;
  UniqueFd ctl;
  std::string key;  // empty until ready
  pid_t init_pid = -1, program_pid = -1;
  unsigned long long tmpfs_size = 0;
  long memory_kib = 0;  // PSS of helper, init and waiter, measured when it got ready
  int nice = -1;        // its autogroup's nice during the fill, as the helper reported it
  bool raise = false;   // to be raised to nice 0: its pool fell behind while it started (pool/demand.hpp)
  uid_t uid = 0;
  gid_t gid = 0;
  Clock::time_point started = Clock::now(), ready_at;
  bool ready() const { return !key.empty(); }
};

// What a kernelspec's pool is built from (the last claim's launcher argv
// template and environment), and its entries.
struct Pool {
  std::vector<std::string> spec;
  std::map<std::string, std::string> env;
  std::string cwd;
  int size = 0;
  int claimed = 0, discarded = 0;
  int refused = 0;  // claims answered "start cold" (empty pool, attach or hand-over failed)
  std::string last_error;
  std::string held_back;                       // why it has fewer than `size` (a cap), empty otherwise
  std::optional<Clock::time_point> behind_at;  // the last claim that found no ready sandbox
  bool behind() const { return behind_at && Clock::now() - *behind_at < kBehindWindow; }
  std::vector<std::unique_ptr<Entry>> entries;
  std::string run;  // a run's own pool (pool/run_hold.hpp): its token; it ends with the run
  pid_t run_pid = 0;
  // Helpers in a row that never got ready (a broken kernelspec, say): at
  // kMaxFailures this pool's refills stop, until the next launch of it tries
  // once more. Per pool: one broken kernelspec stops no other's refills.
  int failures = 0;
  int failed = 0;  // all helpers of this pool that never got ready
};

std::string spec_id(const std::vector<std::string>& spec) { return nlohmann::json(spec).dump(); }

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return 0;
}

std::string launcher_path() {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  std::string p = n > 0 ? std::string(exe, static_cast<size_t>(n)) : "/usr/bin/isolated-kernel";
  return p.substr(0, p.rfind('/')) + "/isolated-kernel-launcher";
}

class Daemon {
 public:
  Daemon(const DaemonOptions& o, std::string dir, UniqueFd listener, PriorityProbe priority)
      : o_(o), dir_(std::move(dir)), listener_(std::move(listener)), priority_(std::move(priority)) {}

  int run() {
    if (o_.scan) prescan();
    sigset_t sigs;
    sigemptyset(&sigs);
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&sigs, s);
    sigprocmask(SIG_BLOCK, &sigs, nullptr);
    UniqueFd sigfd(signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK));
    last_claim_ = Clock::now();
    while (!stop_) {
      // A negative fd is left out by poll(): the listener rests (pause_accepting).
      std::vector<pollfd> fds{{accepting() ? listener_.get() : -1, POLLIN, 0}, {sigfd.get(), POLLIN, 0}};
      std::vector<std::pair<Pool*, Entry*>> owners;
      for (auto& [id, pool] : pools_)
        for (auto& e : pool.entries) {
          fds.push_back({e->ctl.get(), POLLIN, 0});
          owners.emplace_back(&pool, e.get());
        }
      if (!holds_.empty()) last_claim_ = Clock::now();  // a run holds a pool: not idle
      const size_t run_fds_at = fds.size();
      add_run_fds(fds);
      const Pending timers = pending_timers();
      if (timers.idle_left_s && *timers.idle_left_s <= 0) {
        log::step("idle for %lds: stopping", o_.idle_seconds);
        break;
      }
      int n = poll(fds.data(), fds.size(), next_wakeup_ms(timers));
      if (n < 0 && errno != EINTR) break;
      if (fds[1].revents) on_signal(sigfd.get());
      for (size_t i = 2; i < run_fds_at; ++i)
        if (fds[i].revents) on_helper(*owners[i - 2].first, owners[i - 2].second);
      on_run_fds(fds, run_fds_at);
      if (fds[0].revents) on_connection();
      if (refill_) {
        // After the loop above: fill may drop entries the loop still points at.
        refill_ = false;
        for (auto& [id, pool] : pools_) fill(pool);
      }
      serve_waiting_claims();
      raise_behind_refills();
      reap();
    }
    unlink(socket_path(dir_).c_str());
    listener_.reset();  // claims queued meanwhile see a hang-up and start cold at once
    end_waiting_sandboxes();
    remove_refill_cgroup();  // pool/cpu_cgroup.hpp; before `pool stop` is answered
    // `pool stop` returns once nothing of ours is left (as systemctl stop).
    if (stop_reply_.valid()) (void)send_message(stop_reply_.get(), {{"ok", true}});
    return 0;
  }

 private:
  void on_signal(int sigfd) {
    signalfd_siginfo si{};
    while (read(sigfd, &si, sizeof si) == sizeof si)
      if (si.ssi_signo != SIGCHLD) stop_ = true;
  }

  void reap() {
    int status = 0;
    for (pid_t pid; (pid = waitpid(-1, &status, WNOHANG)) > 0;) {
      // Said in pool.log: why a helper ended (a waiting one should not).
      if (WIFSIGNALED(status))
        log::warn("pool: helper %d killed by signal %d (%s)", static_cast<int>(pid), WTERMSIG(status),
                  sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?");
      else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        log::step("pool: helper %d exited with status %d", static_cast<int>(pid), WEXITSTATUS(status));
    }
  }

  // Hangs up on every helper (a waiting one ends with its sandbox) and
  // follows them, their sandbox inits and the run pools already ending until
  // they are gone (EndingPool: SIGKILL after the grace, for a helper still
  // setting up at nice 19 that notices late). Claimed kernels are not in
  // pools_ any more: they are spared. Bounded: a process stuck in the kernel
  // must not keep `pool stop` waiting for ever.
  void end_waiting_sandboxes() {
    std::vector<ExpectedChild> procs;
    for (auto& [id, pool] : pools_)
      for (auto& e : pool.entries) procs.insert(procs.end(), {{e->helper, getpid()}, {e->init_pid, e->helper}});
    ending_.emplace_back(procs, UniqueFd(), nlohmann::json());  // pidfds first, then the sockets close
    pools_.clear();
    for (const auto until = Clock::now() + std::chrono::seconds(10); !ending_.empty() && Clock::now() < until;) {
      std::vector<pollfd> fds;
      int ms = 100;
      for (const auto& e : ending_) {
        for (int fd : e.fds()) fds.push_back({fd, POLLIN, 0});
        ms = std::min(ms, e.ms_to_next_step());
      }
      poll(fds.data(), fds.size(), ms);
      reap();
      std::erase_if(ending_, [](EndingPool& e) { return e.step(); });
    }
    reap();
  }

  bool raise_pending() const {
    for (const auto& [id, pool] : pools_)
      for (const auto& e : pool.entries)
        if (e->raise) return true;
    return false;
  }

  // The refills in flight of a pool behind its demand: nice 0 now.
  void raise_behind_refills() {
    for (auto& [id, pool] : pools_)
      for (auto& e : pool.entries)
        if (e->raise && raise_refill(e->helper)) e->raise = false;
  }

  void drop(Pool& pool, Entry* e) {
    std::erase_if(pool.entries, [&](const auto& p) { return p.get() == e; });
  }

  // A helper reported ready or an error, or hung up (its sandbox died).
  void on_helper(Pool& pool, Entry* e) {
    auto m = recv_message(e->ctl.get());
    if (!m || m->body.contains("error")) {
      pool.last_error = m ? m->body["error"].get<std::string>() : "helper ended";
      if (m) log::warn("pool: %s", pool.last_error.c_str());
      // Only a helper that never got ready is a failure (a broken kernelspec, say);
      // a ready sandbox killed from outside is replaced without counting, or three
      // such deaths would stop every pool's refills for good.
      const bool failed_to_start = !e->ready();
      drop(pool, e);
      if (failed_to_start) ++pool.failures, ++pool.failed;
      refill_ = true;  // a killed waiter is replaced; fill() stops after kMaxFailures in a row
      return;
    }
    e->key = m->body.value("key", "");
    e->init_pid = m->body.value("init_pid", -1);
    e->program_pid = m->body.value("program_pid", -1);
    e->tmpfs_size = m->body.value("tmpfs_size", 0ull);
    e->uid = m->body.value("uid", 0u);
    e->gid = m->body.value("gid", 0u);
    e->nice = m->body.value("nice", -1);
    e->ready_at = Clock::now();
    pool.failures = 0;
    e->memory_kib = memory_kib({e->helper, e->init_pid, e->program_pid});
    estimate_kib_ = std::max(estimate_kib_, e->memory_kib);
    // Over the cap after all (the estimate was low, or even one sandbox is
    // too much): this one goes, and the cap is what status says.
    if (cap_kib() > 0 && memory_total() > cap_kib()) {
      pool.held_back = memory_cap_text();
      log::warn("pool: %s", pool.held_back.c_str());
      drop(pool, e);
      return;
    }
    refill_ = true;
  }

  long cap_kib() const { return static_cast<long>(o_.max_memory / 1024); }

  // What the ready sandboxes use (as measured when ready) plus an estimate
  // of those still starting.
  long memory_total() const {
    long sum = 0;
    for (const auto& [id, p] : pools_)
      for (const auto& e : p.entries) sum += e->ready() ? e->memory_kib : estimate_kib_;
    return sum;
  }

  int starting_total() const {
    int n = 0;
    for (const auto& [id, p] : pools_)
      for (const auto& e : p.entries) n += e->ready() ? 0 : 1;
    return n;
  }

  std::string memory_cap_text() const {
    return "memory cap " + format_size(o_.max_memory) + " reached (--max-memory): " + std::to_string(waiting_total()) +
           " waiting sandboxes use " + std::to_string(memory_total() / 1024) + " MiB, one more takes about " +
           std::to_string(estimate_kib_ / 1024) + " MiB";
  }

  // Whether one more sandbox fits the caps; else `why`.
  bool fits(std::string& why) const {
    if (waiting_total() >= o_.max_sandboxes) {
      why = "count cap reached (--max-sandboxes " + std::to_string(o_.max_sandboxes) + ")";
      return false;
    }
    if (cap_kib() <= 0) return true;
    // Until one sandbox has been measured, one starts at a time.
    if (estimate_kib_ == 0) return starting_total() == 0;
    if (memory_total() + estimate_kib_ > cap_kib()) {
      why = memory_cap_text();
      return false;
    }
    return true;
  }

  // The installed kernelspecs that ask for a pool get one now, from our own
  // environment; a launch whose environment differs replaces its entries.
  void prescan() {
    auto found = prescan_kernelspecs(environ);
    for (const auto& problem : found.problems) log::warn("%s", problem.c_str());
    for (auto& ps : found.specs) {
      Pool& pool = pools_[spec_id(ps.spec)];
      pool.spec = ps.spec;
      pool.env = ps.env;
      pool.size = std::min(ps.size, o_.max_sandboxes);
      fill(pool);
    }
  }

  int waiting_total() const {
    int n = 0;
    for (const auto& [id, p] : pools_) n += static_cast<int>(p.entries.size());
    return n;
  }

  // Starts helpers until the pool has `size` entries (ready or starting).
  void fill(Pool& pool) {
    // A kernelspec whose helpers keep failing is not retried in a loop.
    if (pool.failures >= kMaxFailures) {
      pool.held_back = "refills stopped: the last " + std::to_string(pool.failures) +
                       " waiting sandboxes failed to start (last error below); the next launch tries one again";
      return;
    }
    if (static_cast<int>(pool.entries.size()) >= pool.size) pool.held_back.clear();
    // After a failure, one sandbox at a time until one gets ready: a broken
    // kernelspec costs one failed start per try, not one per slot.
    const auto probing = [&] {
      return pool.failures > 0 &&
             std::any_of(pool.entries.begin(), pool.entries.end(), [](const auto& e) { return !e->ready(); });
    };
    while (static_cast<int>(pool.entries.size()) < pool.size && !probing()) {
      std::string why;
      if (!fits(why)) {
        if (!why.empty()) pool.held_back = why;
        return;
      }
      pool.held_back.clear();
      int sv[2];
      if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return refill_failed(pool, "socketpair");
      auto e = std::make_unique<Entry>();
      e->ctl.reset(sv[0]);
      UniqueFd theirs(sv[1]);
      std::vector<std::string> args{launcher_path(), "--pool-helper", "3"};
      args.insert(args.end(), pool.spec.begin(), pool.spec.end());
      std::vector<std::string> env;
      for (const auto& [k, v] : pool.env) env.push_back(k + "=" + v);
      if (const auto cg = refill_cgroup_env_value(refill_cgroups()); !cg.empty())  // pool/cpu_cgroup.hpp
        env.push_back(std::string(kRefillCgroupEnv) + "=" + cg);
      if (pool.behind()) env.push_back(std::string(kNormalRefillEnv) + "=1");  // pool/demand.hpp
      pid_t pid = fork();
      if (pid < 0) return refill_failed(pool, "fork");
      if (pid == 0) {
        // Not niced: the kernel would inherit the nice value and an
        // unprivileged process cannot lower it again (docs/pool.md, gaps).
        if (theirs.get() == 3) fcntl(3, F_SETFD, 0);
        else dup2(theirs.get(), 3);  // dup2 clears close-on-exec on 3
        setsid();                    // not in the daemon's group: stopping it spares claimed kernels
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        if (chdir(dir_.c_str()) != 0) _exit(125);
        std::vector<char*> argv, envp;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        for (auto& a : env) envp.push_back(a.data());
        envp.push_back(nullptr);
        execve(argv[0], argv.data(), envp.data());
        _exit(127);
      }
      e->helper = pid;
      pool.entries.push_back(std::move(e));
    }
  }

  // A refill that could not start its helper (out of descriptors or
  // processes): said in `pool status` and pool.log, as a failing helper is.
  // Not retried here: the next claim or helper event tries again, so a
  // lasting shortage costs one try per such event, never a loop.
  void refill_failed(Pool& pool, const char* step) {
    const int err = errno;
    pool.last_error = std::string("refill: ") + step + ": " + std::strerror(err) + " (the next launch tries again)";
    log::warn("pool: %s", pool.last_error.c_str());
  }

  // Out of descriptors, a connection left pending would make poll() return
  // at once: a busy loop until one frees. The listener rests a while
  // instead; the connection waits in the backlog (a claim gives up after its
  // wait and starts cold).
  void pause_accepting(int err) {
    if (!accept_paused_until_)
      log::warn("pool: accept: %s: connections wait until descriptors free (tried again every %d ms)",
                std::strerror(err), kAcceptRetryMs);
    accept_paused_until_ = Clock::now() + std::chrono::milliseconds(kAcceptRetryMs);
  }

  bool accepting() const { return !accept_paused_until_ || Clock::now() >= *accept_paused_until_; }

  void on_connection() {
    UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c.valid()) {
      if (errno == EMFILE || errno == ENFILE) pause_accepting(errno);
      return;
    }
    accept_paused_until_.reset();
    auto uid = peer_uid(c.get());
    if (!uid || *uid != getuid()) return;  // only our own uid is served
    // A client that connected but says nothing (stopped, or a stray
    // connect) must not hold up every claim: the request is sent right
    // after connect(), so a short wait is plenty.
    if (pollfd p{c.get(), POLLIN, 0}; poll(&p, 1, kRequestWaitMs) <= 0) {
      log::warn("pool: a client connected but sent no request within %d ms: dropped", kRequestWaitMs);
      return;
    }
    auto m = recv_message(c.get());
    if (!m) return;
    const std::string op = m->body.value("op", "");
    if (op == "status") (void)send_message(c.get(), status());
    else if (op == "stop") {
      stop_reply_ = std::move(c);  // answered once the waiting sandboxes are gone
      stop_ = true;
    } else if (op == "claim") {
      last_claim_ = Clock::now();
      claim(std::move(c), *m);
    } else if (op == "hold") {
      hold(std::move(c), m->body);
    } else {
      (void)send_message(c.get(), {{"ok", false}, {"reason", "unknown op"}});
    }
  }

  nlohmann::json status() const {
    nlohmann::json pools = nlohmann::json::array();
    for (const auto& [id, p] : pools_) {
      nlohmann::json ages = nlohmann::json::array(), waiting = nlohmann::json::array();
      int ready = 0;
      long rss = 0, mem = 0;
      for (const auto& e : p.entries) {
        if (!e->ready()) continue;
        ++ready;
        const double age = std::round(seconds_since(e->ready_at) * 10) / 10;
        ages.push_back(age);
        rss += rss_kib(e->helper) + rss_kib(e->init_pid) + rss_kib(e->program_pid);
        const long m = memory_kib({e->helper, e->init_pid, e->program_pid});
        mem += m;
        waiting.push_back({{"helper_pid", e->helper},
                           {"program_pid", e->program_pid},
                           {"age", age},
                           {"memory_kib", m},
                           {"nice", autogroup_nice(e->helper)},  // now (0 once ready, where autogroups apply)
                           {"fill_nice", e->nice}});             // what it was filled at, as its helper reported
      }
      pools.push_back({{"spec", p.spec},
                       {"size", p.size},
                       {"ready", ready},
                       {"starting", static_cast<int>(p.entries.size()) - ready},
                       {"claimed", p.claimed},
                       {"discarded", p.discarded},
                       {"refused", p.refused},
                       {"failed", p.failed},
                       {"ages", ages},
                       {"rss_kib", rss},
                       {"memory_kib", mem},
                       {"waiting", waiting},
                       {"held_back", p.held_back},
                       {"behind", p.behind()},
                       {"last_error", p.last_error},
                       {"run", p.run.empty() ? nlohmann::json(nullptr) : nlohmann::json{{"pid", p.run_pid}}}});
    }
    return {{"pid", getpid()},
            {"socket", socket_path(dir_)},
            {"idle_timeout", o_.idle_seconds},
            {"max_sandboxes", o_.max_sandboxes},
            {"max_memory_kib", cap_kib()},
            {"memory_kib", memory_total()},
            {"low_priority", priority_.low},
            {"priority", priority_.why},
            {"priority_mechanism", priority_.mechanism},
            {"pools", pools}};
  }

  // may_wait: a claim of a run's pool may wait for a starting sandbox
  // (pool/run_hold.hpp); false when a waiting claim is served.
  void claim(UniqueFd c, Message& m, bool may_wait = true) {
    const auto refuse = [&](const std::string& why) { (void)send_message(c.get(), {{"ok", false}, {"reason", why}}); };
    // stdout, stderr, and optionally the five bound host ports (relay/prebound.hpp)
    if (m.fds.size() != 2 && m.fds.size() != 7) return refuse("bad claim");
    std::vector<std::string> spec;
    std::vector<MountOp> ops;
    std::string key;
    try {
      spec = m.body.at("spec").get<std::vector<std::string>>();
      key = m.body.at("key").get<std::string>();
      for (const auto& j : m.body.at("launch_ops")) {
        auto op = op_from_json(j);
        if (!op) return refuse(op.error().describe());
        ops.push_back(*op);
      }
      // A run's launchers claim from the run's own pool, sized by the run.
      std::string id = spec_id(spec);
      const std::string run = m.body.value("run", std::string());
      const bool of_run = !run.empty() && pools_.count(run_pool_id(id, run)) > 0;
      if (of_run) id = run_pool_id(id, run);
      Pool& pool = pools_[id];
      pool.spec = spec;
      pool.env = m.body.at("env").get<std::map<std::string, std::string>>();
      if (!of_run) pool.size = std::max(0, std::min(m.body.at("size").get<int>(), o_.max_sandboxes));
      // Stale entries (kernelspec, interpreter, env or version changed) are
      // never handed out.
      const size_t before = pool.entries.size();
      std::erase_if(pool.entries, [&](const auto& e) { return e->ready() && e->key != key; });
      pool.discarded += static_cast<int>(before - pool.entries.size());
      Entry* found = nullptr;
      for (auto& e : pool.entries)
        if (e->ready() && (!found || e->ready_at < found->ready_at)) found = e.get();
      if (!found) {
        // A pool that failed since its last ready sandbox is not waited for
        // (its starting sandbox is a probe that may fail too) nor raised.
        const bool failing = pool.failures > 0;
        if (of_run && may_wait && !failing && wait_for_starting(pool, id, c, m)) return;
        // A pool whose refills stopped (failures) tries one sandbox again for this launch.
        pool.failures = std::min(pool.failures, kMaxFailures - 1);
        ++pool.refused;
        if (!failing) {
          // Behind its demand: what starts now, and what is starting, at normal priority.
          pool.behind_at = Clock::now();
          for (auto& e : pool.entries) e->raise = !e->ready();
        }
        refuse(pool.entries.empty()
                   ? "the pool of this kernelspec is empty: filling it"
                   : "no waiting sandbox is ready yet (" + std::to_string(pool.entries.size()) + " starting)");
        fill(pool);
        return;
      }
      const unsigned mask = m.body.at("kernel").value("umask", 022u) & 0777u;
      if (auto s = attach_launch_ops(found->init_pid, ops, found->tmpfs_size, found->uid, found->gid, mask); !s) {
        ++pool.refused;
        // Said in `pool status` and pool.log: the claimer says it only under -v.
        pool.last_error = s.error().describe();
        log::warn("pool: claim started cold: %s", pool.last_error.c_str());
        refuse(pool.last_error);
        drop(pool, found);
        fill(pool);
        return;
      }
      nlohmann::json body = m.body;
      body.erase("launch_ops");
      std::vector<int> pass{c.get()};
      for (const auto& fd : m.fds) pass.push_back(fd.get());
      if (auto s = send_message(found->ctl.get(), body, pass); !s) {
        ++pool.refused;
        refuse(s.error().describe());
        drop(pool, found);
      } else {
        ++pool.claimed;
        // The helper now belongs to its launcher: no longer ours to stop.
        drop(pool, found);
      }
      fill(pool);
    } catch (const std::exception& e) {
      refuse(std::string("bad claim: ") + e.what());
    }
  }

  // --- a run's own pool (pool/run_hold.hpp) ---

  void hold(UniqueFd c, const nlohmann::json& body) {
    auto h = parse_hold(body);
    if (!h) return (void)send_message(c.get(), {{"ok", false}, {"reason", h.error().describe()}});
    const std::string id = run_pool_id(spec_id(h->spec), h->token);
    if (pools_.count(id))
      return (void)send_message(c.get(), {{"ok", false}, {"reason", "this run holds a pool already"}});
    Pool& pool = pools_[id];
    pool.spec = h->spec;
    pool.env = h->env;
    pool.size = std::min(h->size, o_.max_sandboxes);
    pool.run = h->token;
    pool.run_pid = peer_pid(c.get());
    (void)send_message(c.get(), {{"ok", true}, {"size", pool.size}});
    holds_.push_back({h->token, id, pool.run_pid, std::move(c)});
    fill(pool);
  }

  void add_run_fds(std::vector<pollfd>& fds) const {
    for (const auto& h : holds_) fds.push_back({h.conn.get(), POLLIN, 0});
    for (const auto& w : waiting_) fds.push_back({w.conn.get(), POLLIN, 0});  // the launcher gave up
  }

  // What the poll loop's timeout is made of (pool/wakeup.hpp).
  Pending pending_timers() const {
    Pending p;
    // --idle 0: never (the systemd user unit).
    if (o_.idle_seconds > 0) p.idle_left_s = static_cast<double>(o_.idle_seconds) - seconds_since(last_claim_);
    p.raise_pending = raise_pending();  // rate-limited raises are tried again soon
    p.claims_waiting = !waiting_.empty();
    if (accept_paused_until_ && !accepting())
      p.accept_paused_ms =
          static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(*accept_paused_until_ - Clock::now()).count());
    for (const auto& e : ending_) {
      const int ms = e.ms_to_next_step();
      if (!p.ending_ms || ms < *p.ending_ms) p.ending_ms = ms;
    }
    return p;
  }

  void on_run_fds(const std::vector<pollfd>& fds, size_t at) {
    std::vector<std::pair<std::string, bool>> ends;  // pool id, released (else hung up)
    for (size_t i = 0; i < holds_.size(); ++i) {
      if (!fds[at + i].revents) continue;
      auto m = recv_message(holds_[i].conn.get());
      const std::string op = m ? m->body.value("op", "") : "";
      if (op == "resize") resize_run_pool(holds_[i].pool_id, m->body.value("size", 0));
      else ends.emplace_back(holds_[i].pool_id, op == "release");
    }
    at += holds_.size();
    for (size_t i = 0; i < waiting_.size(); ++i)
      if (fds[at + i].revents) waiting_[i].conn.reset();  // its launcher went on cold or died
    std::erase_if(waiting_, [](const WaitingClaim& w) { return !w.conn.valid(); });
    for (const auto& [id, released] : ends) end_run_pool(id, released);
    std::erase_if(ending_, [](EndingPool& e) { return e.step(); });
  }

  // Fewer notebooks left than sandboxes: the surplus goes (starting ones first).
  void resize_run_pool(const std::string& id, int size) {
    auto it = pools_.find(id);
    if (it == pools_.end()) return;
    Pool& pool = it->second;
    int waiting = 0;
    for (const auto& w : waiting_) waiting += w.pool_id == id ? 1 : 0;
    pool.size = std::max(waiting, std::min(size, o_.max_sandboxes));
    std::stable_partition(pool.entries.begin(), pool.entries.end(), [](const auto& e) { return e->ready(); });
    while (static_cast<int>(pool.entries.size()) > pool.size) pool.entries.pop_back();
  }

  void end_run_pool(const std::string& id, bool released) {
    UniqueFd reply_to;
    for (auto& h : holds_)
      if (h.pool_id == id && released) reply_to = std::move(h.conn);
    std::erase_if(holds_, [&](const HeldRun& h) { return h.pool_id == id; });
    nlohmann::json reply{{"ok", true}};
    std::vector<ExpectedChild> procs;
    if (auto it = pools_.find(id); it != pools_.end()) {
      reply["claimed"] = it->second.claimed;
      reply["refused"] = it->second.refused;
      reply["discarded"] = it->second.discarded;
      for (const auto& e : it->second.entries)
        procs.insert(procs.end(), {{e->helper, getpid()}, {e->init_pid, e->helper}});
      EndingPool ending(procs, std::move(reply_to), reply);  // pidfds first, then the sockets close
      pools_.erase(it);
      ending_.push_back(std::move(ending));
    }
    for (auto& w : waiting_)
      if (w.pool_id == id) (void)send_message(w.conn.get(), {{"ok", false}, {"reason", "the run's pool ended"}});
    std::erase_if(waiting_, [&](const WaitingClaim& w) { return w.pool_id == id; });
  }

  // A claim of a run's pool with nothing ready waits for a starting sandbox
  // that no earlier claim waits for; false when there is none.
  bool wait_for_starting(const Pool& pool, const std::string& id, UniqueFd& c, Message& m) {
    int starting = 0, waiting = 0;
    for (const auto& e : pool.entries) starting += e->ready() ? 0 : 1;
    for (const auto& w : waiting_) waiting += w.pool_id == id ? 1 : 0;
    if (starting <= waiting) return false;
    const auto now = Clock::now();
    waiting_.push_back({std::move(c), std::move(m), id, now, now + std::chrono::milliseconds(kRunClaimWaitMs)});
    boost_waited_for_entries();
    return true;
  }

  // The oldest starting sandboxes of each run pool, one per waiting claim,
  // run at normal priority: they stand in for cold starts.
  void boost_waited_for_entries() {
    std::map<std::string, int> want;
    for (const auto& w : waiting_) ++want[w.pool_id];
    for (auto& [id, n] : want) {
      auto it = pools_.find(id);
      if (it == pools_.end()) continue;
      for (const auto& e : it->second.entries)
        if (!e->ready() && n-- > 0) (void)boost_waited_for(e->helper);
    }
  }

  // Waiting claims whose pool has a ready sandbox get it (oldest claim
  // first); those past their time, or whose sandbox failed, start cold.
  void serve_waiting_claims() {
    if (waiting_.empty()) return;
    const auto now = Clock::now();
    std::map<std::string, int> starting, ready;
    for (const auto& [id, p] : pools_)
      for (const auto& e : p.entries) ++(e->ready() ? ready : starting)[id];
    std::vector<WaitingClaim> keep, serve;
    std::map<std::string, int> kept;
    for (auto& w : waiting_) {
      if (ready[w.pool_id] > 0) {
        --ready[w.pool_id];
        serve.push_back(std::move(w));
      } else if (now < w.deadline && kept[w.pool_id] < starting[w.pool_id]) {
        ++kept[w.pool_id];
        keep.push_back(std::move(w));
      } else {
        const double waited = std::chrono::duration<double>(now - w.since).count();
        if (auto it = pools_.find(w.pool_id); it != pools_.end()) ++it->second.refused;
        (void)send_message(w.conn.get(), {{"ok", false},
                                          {"reason", "waited " + std::to_string(static_cast<int>(waited * 1000)) +
                                                         " ms for the run's pool: starting cold"}});
      }
    }
    waiting_ = std::move(keep);
    for (auto& w : serve) claim(std::move(w.conn), w.msg, false);
    boost_waited_for_entries();
  }

  std::vector<HeldRun> holds_;
  std::vector<WaitingClaim> waiting_;
  std::vector<EndingPool> ending_;

  DaemonOptions o_;
  std::string dir_;
  UniqueFd listener_;
  std::map<std::string, Pool> pools_;
  Clock::time_point last_claim_;
  bool stop_ = false;
  std::optional<Clock::time_point> accept_paused_until_;  // out of descriptors (pause_accepting)
  UniqueFd stop_reply_;
  bool refill_ = false;
  long estimate_kib_ = 0;   // the largest waiting sandbox measured: what one more will take
  PriorityProbe priority_;  // decided once at start: what `pool start` printed is what status shows
};

// Our own user and mount namespace, ids mapped to themselves, so the daemon
// keeps every capability over the sandboxes its helpers create (they are
// children of this namespace) and may open_tree in its own mount namespace.
// Must run single-threaded. A forked child writes the maps: a map wider than
// our own uid needs a writer in the parent namespace.
Status enter_own_namespaces() {
  int go[2];
  if (pipe2(go, O_CLOEXEC) != 0) return sys_error("pool: pipe");
  const pid_t self = getpid();
  pid_t mapper = fork();
  if (mapper < 0) return sys_error("pool: fork");
  if (mapper == 0) {
    close(go[1]);
    char b;
    if (read(go[0], &b, 1) != 1) _exit(1);
    Identity id;
    id.outer_uid = id.inner_uid = getuid();
    id.outer_gid = id.inner_gid = getgid();
    id.maps = choose_id_maps(getuid(), getgid(), getuid(), getgid(), read_mappable_ids());
    auto s = write_id_maps(self, id);
    _exit(s ? 0 : 1);
  }
  close(go[0]);
  UniqueFd w(go[1]);
  if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return sys_error("pool: unshare user and mount namespaces");
  if (write(w.get(), "g", 1) != 1) return sys_error("pool: pipe");
  int st = 0;
  while (waitpid(mapper, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return Error{"pool: write the daemon's id maps", 0, {}, {}, kExitSetup};
  // Host mounts made later still reach us (a slave, not a private copy).
  if (mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) return sys_error("pool: make / a slave");
  return ok();
}

Result<UniqueFd> listen_on(const std::string& dir) {
  UniqueFd s(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!s.valid()) return sys_error("pool: socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = socket_path(dir);
  if (path.size() >= sizeof addr.sun_path)
    return Error{"pool: socket path " + path, 0, "longer than a unix socket address allows (107 bytes)",
                 "set XDG_RUNTIME_DIR to a shorter directory", kExitUsage};
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  unlink(path.c_str());  // a stale socket: we hold the lock, so no daemon uses it
  if (bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return sys_error("pool: bind " + path);
  if (listen(s.get(), 64) != 0) return sys_error("pool: listen " + path);
  return s;
}

}  // namespace

int pool_start(const DaemonOptions& o) {
  const std::string dir = socket_dir();
  if (auto s = ensure_private_dir(dir); !s) return print_error(s.error());
  UniqueFd lock(open(lock_path(dir).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock.valid()) return print_error(sys_error("pool: open " + lock_path(dir)));
  if (flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    ssize_t n = pread(lock.get(), pid, sizeof pid - 1, 0);
    (void)n;
    if (o.quiet) return kExitAlreadyRunning;
    std::fprintf(stderr,
                 "isolated-kernel: pool start: a pool daemon already runs for this user (pid %s, socket %s) "
                 "(stop it with 'isolated-kernel pool stop')\n",
                 pid[0] ? pid : "?", socket_path(dir).c_str());
    return kExitAlreadyRunning;
  }
  int ready[2];
  if (!o.foreground) {
    if (pipe2(ready, O_CLOEXEC) != 0) return print_error(sys_error("pool: pipe"));
    pid_t pid = fork();
    if (pid < 0) return print_error(sys_error("pool: fork"));
    if (pid > 0) {
      close(ready[1]);
      lock.reset();  // the daemon holds its own copy of the lock
      char buf[1024];
      ssize_t n = read(ready[0], buf, sizeof buf - 1);
      if (n <= 0) {
        std::fprintf(stderr, "isolated-kernel: pool start: the daemon did not start\n");
        return kExitSetup;
      }
      buf[n] = 0;
      if (buf[0] != 'O') {
        std::fprintf(stderr, "isolated-kernel: %s\n", buf);
        return kExitSetup;
      }
      // "O<pid>\n<how refills are prioritised>"
      char* why = std::strchr(buf, '\n');
      if (why) *why++ = 0;
      if (!o.quiet)
        std::printf("pool daemon started (pid %s, socket %s); %s\n", buf + 1, socket_path(dir).c_str(), why ? why : "");
      return 0;
    }
    close(ready[0]);
    setsid();
  }
  const auto report = [&](const std::string& text) {
    if (!o.foreground && write(ready[1], text.data(), text.size()) < 0) {
    }
  };
  // Where autogroups do not apply: a low-weight cpu cgroup for refills, made
  // from the host's user namespace (pool/cpu_cgroup.hpp).
  if (!probe_refill_priority().low) (void)prepare_refill_cgroups();
  const PriorityProbe priority = daemon_refill_priority();
  if (auto s = enter_own_namespaces(); !s) {
    report(s.error().describe());
    return print_error(s.error());
  }
  auto listener = listen_on(dir);
  if (!listener) {
    report(listener.error().describe());
    return print_error(listener.error());
  }
  const std::string pid = std::to_string(getpid());
  if (ftruncate(lock.get(), 0) == 0 && pwrite(lock.get(), pid.data(), pid.size(), 0) < 0) {
  }
  // Our log: the daemon's stderr (warnings of failing helpers).
  if (!o.foreground) {
    UniqueFd logf(open((dir + "/pool.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    UniqueFd null(open("/dev/null", O_RDWR | O_CLOEXEC));
    dup2(null.get(), 0);
    dup2(null.get(), 1);
    dup2(logf.valid() ? logf.get() : null.get(), 2);
    report("O" + pid + "\n" + priority.why);
    close(ready[1]);
  }
  if (o.foreground && !o.quiet)
    std::fprintf(stderr, "isolated-kernel: pool daemon pid %s, socket %s; %s\n", pid.c_str(), socket_path(dir).c_str(),
                 priority.why.c_str());
  Daemon d(o, dir, std::move(*listener), priority);
  const int rc = d.run();
  // The lock is closed by our exit itself, not before: a `pool stop` waiting
  // for it (pool/lock.hpp) returns once the daemon is gone.
  (void)lock.release();
  return rc;
}

namespace {

// The daemon's pid as the kernel saw it at connect (SO_PEERCRED), as a pidfd
// opened before we ask it to stop, so the pid cannot be reused under us.
UniqueFd daemon_pidfd(int sock) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid <= 0) return UniqueFd();
  return UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, cred.pid, 0)));
}

// The daemon answers once its waiting sandboxes are gone.
Result<Message> ask_to_stop(UniqueFd& pidfd) {
  auto sock = connect_daemon(socket_dir());
  if (!sock) return sock.error();
  pidfd = daemon_pidfd(sock->get());
  IK_TRY(send_message(sock->get(), {{"op", "stop"}}));
  return recv_message(sock->get());
}

}  // namespace

// How long `pool stop` waits for a daemon that does not answer but holds
// its lock (stopping: its sandboxes get 10 s at most; or starting).
constexpr auto kStopWait = std::chrono::seconds(30);

int pool_stop() {
  const std::string dir = socket_dir();
  const auto until = Clock::now() + kStopWait;
  for (bool waited = false;; usleep(20000)) {
    UniqueFd pidfd;
    if (auto reply = ask_to_stop(pidfd)) {
      // We return once the daemon is gone too: a `pool start` right after never meets it.
      if (pidfd.valid()) {
        pollfd p{pidfd.get(), POLLIN, 0};
        while (poll(&p, 1, 10000) < 0 && errno == EINTR) {
        }
      }
      break;
    } else if (!daemon_holds_lock(dir)) {
      if (waited) break;  // the stop we waited for is done
      std::fprintf(stderr, "isolated-kernel: pool stop: no pool daemon runs for this user (%s)\n",
                   reply.error().describe().c_str());
      return 1;
    }
    // Unreachable but alive: another `pool stop` (or systemd) is stopping it
    // (its socket is gone first), or it is still starting. Same end either way.
    if (!waited)
      std::fprintf(stderr, "isolated-kernel: pool stop: the pool daemon does not answer (stopping already, or "
                           "starting): waiting for it\n");
    waited = true;
    if (Clock::now() > until) {
      std::fprintf(stderr, "isolated-kernel: pool stop: the pool daemon still holds %s after %llds (see %s/pool.log)\n",
                   lock_path(dir).c_str(), static_cast<long long>(kStopWait.count()), dir.c_str());
      return 1;
    }
  }
  std::printf("pool daemon stopped\n");
  return 0;
}

int pool_status(bool json) {
  auto r = request(socket_dir(), {{"op", "status"}});
  if (!r) {
    if (json) std::printf("{\"running\": false}\n");
    else std::printf("no pool daemon runs for this user\n");
    return json ? 0 : 1;
  }
  (*r)["running"] = true;
  if (json) {
    std::printf("%s\n", r->dump(1).c_str());
    return 0;
  }
  std::printf("pool daemon pid %d, socket %s, idle timeout %lds\n", r->value("pid", 0),
              r->value("socket", std::string()).c_str(), r->value("idle_timeout", 0L));
  const long cap = r->value("max_memory_kib", 0L);
  std::printf("waiting sandboxes use %ld MiB of %s (--max-memory), at most %d sandboxes (--max-sandboxes)\n",
              r->value("memory_kib", 0L) / 1024, cap > 0 ? (std::to_string(cap / 1024) + " MiB").c_str() : "no cap",
              r->value("max_sandboxes", 0));
  std::printf("%s\n", r->value("priority", std::string()).c_str());
  for (const auto& p : (*r)["pools"]) {
    std::string spec, ages;
    for (const auto& a : p["spec"]) spec += (spec.empty() ? "" : " ") + a.get<std::string>();
    for (const auto& w : p["waiting"]) {
      char one[96];
      std::snprintf(one, sizeof one, "%s%.0fs/%ld MiB", ages.empty() ? "" : ", ", w.value("age", 0.0),
                    w.value("memory_kib", 0L) / 1024);
      ages += one;
    }
    std::printf("  %s\n    size %d, ready %d, starting %d, claimed %d, refused %d, discarded %d, failed to start %d",
                spec.c_str(), p.value("size", 0), p.value("ready", 0), p.value("starting", 0), p.value("claimed", 0),
                p.value("refused", 0), p.value("discarded", 0), p.value("failed", 0));
    std::printf(", memory %ld MiB (PSS)\n", p.value("memory_kib", 0L) / 1024);
    if (p.contains("run") && p["run"].is_object())
      std::printf("    the pool of 'isolated-kernel run' pid %d (sized by its -j; ends with it)\n",
                  p["run"].value("pid", 0));
    if (!ages.empty()) std::printf("    waiting (age/memory): %s\n", ages.c_str());
    if (p.value("behind", false))
      std::printf(
          "    behind its demand (a claim found no ready sandbox in the last %llds): refills at normal priority\n",
          static_cast<long long>(kBehindWindow.count()));
    if (!p.value("held_back", std::string()).empty())
      std::printf("    fewer than %d: %s\n", p.value("size", 0), p["held_back"].get<std::string>().c_str());
    if (!p.value("last_error", std::string()).empty())
      std::printf("    last error: %s\n", p["last_error"].get<std::string>().c_str());
  }
  return 0;
}

}  // namespace ik::pool
