#include "batch/run_exec.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>

#include "batch/run_pool.hpp"
#include "batch/run_progress.hpp"
#include "batch/run_record.hpp"
#include "common/fd.hpp"
#include "common/print_error.hpp"

namespace ik::batch {
namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kTailBytes = 16384;
constexpr auto kStopGrace = std::chrono::seconds(10);  // SIGTERM -> SIGKILL of a worker
constexpr auto kDeadlineSlack = std::chrono::seconds(30);
constexpr int kPortRetries = 3;  // starts of one notebook whose kernel port was taken (port_taken_at_start)

std::string self_dir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

std::string hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

struct Worker {
  PlannedNotebook nb;
  RunRecord rec;
  pid_t pid = -1;
  UniqueFd events, err;
  std::string ev_buf, tail;
  bool ready = false;
  int cell = 0, cells = 0;
  std::optional<json> done;
  Clock::time_point start, deadline = Clock::time_point::max();
  bool deadline_hit = false;
};

// A run-private JUPYTER_RUNTIME_DIR (the workers' connection files) and the
// process that removes it when the run is gone, whatever way it ends: it
// waits for EOF on a pipe whose write ends only the orchestrator and its
// workers hold (SIGKILL included).
class RuntimeDir {
 public:
  static Result<RuntimeDir> create() {
    const char* base = std::getenv("XDG_RUNTIME_DIR");
    std::string tmpl = std::string(base && *base && access(base, W_OK) == 0 ? base : "/tmp") + "/ik-run-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) return sys_error("create a runtime directory in " + tmpl.substr(0, tmpl.rfind('/')));
    RuntimeDir d;
    d.path = buf.data();
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return sys_error("pipe");
    pid_t pid = fork();
    if (pid < 0) return sys_error("fork the janitor");
    if (pid == 0) {
      // Not part of Ctrl-C; only the pipe's EOF ends it.
      signal(SIGINT, SIG_IGN);
      signal(SIGTERM, SIG_IGN);
      signal(SIGHUP, SIG_IGN);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      close(p[1]);
      char c;
      while (read(p[0], &c, 1) != 0 && errno == EINTR) {
      }
      std::error_code ec;
      fs::remove_all(d.path, ec);
      _exit(0);
    }
    close(p[0]);
    d.lifeline = UniqueFd(p[1]);
    d.janitor = pid;
    return d;
  }
  std::string path;
  UniqueFd lifeline;  // write end; each worker holds a copy as fd 4
  pid_t janitor = -1;
};

class Executor {
 public:
  Executor(const RunPlan& plan, const ExecSetup& setup, RuntimeDir& rt, RunPool& pool)
      : plan_(plan),
        setup_(setup),
        rt_(rt),
        pool_(pool),
        progress_(isatty(STDERR_FILENO) != 0, plan.notebooks.size() + plan.empty_dirs.size(), 0) {}

  int run();

 private:
  Status prepare();
  void start(const PlannedNotebook& nb);
  void on_events(Worker& w);
  void on_stderr(Worker& w);
  void reap();
  void finish(Worker& w, int status);
  void record(const RunRecord& r);
  void stop(int sig);
  std::vector<RunningView> running_view() const;

  const RunPlan& plan_;
  const ExecSetup& setup_;
  RuntimeDir& rt_;
  RunPool& pool_;
  Progress progress_;
  UniqueFd sigfd_;
  FILE* report_ = nullptr;
  std::deque<PlannedNotebook> pending_;
  std::map<pid_t, std::unique_ptr<Worker>> running_;
  std::vector<RunRecord> records_;
  std::map<std::string, std::string> hashes_;
  std::map<std::string, int> port_retries_;  // per input
  int stop_signal_ = 0;
  Clock::time_point kill_at_ = Clock::time_point::max();
  bool killed_ = false;
};

Status Executor::prepare() {
  std::error_code ec;
  fs::create_directories(plan_.output_dir, ec);
  if (ec) return sys_error("create the output directory " + plan_.output_dir, ec.value(), "use --output-dir DIR");
  std::map<std::string, RunRecord> previous;
  if (plan_.options.resume) previous = load_records(plan_.output_dir);
  // Appended as each notebook ends; rewritten whole at the end.
  report_ = std::fopen(plan_.report_jsonl.c_str(), plan_.options.resume ? "a" : "w");
  if (!report_) return sys_error("open " + plan_.report_jsonl, errno, "check that the output directory is writable");
  for (const auto& dir : plan_.empty_dirs) {
    RunRecord r;
    r.notebook = dir;
    r.input = dir;
    r.status = "could-not-start";
    r.detail = "no notebooks (*.ipynb) in this directory";
    r.started = utc_now();
    r.host = hostname();
    r.share = std::to_string(plan_.options.share_index) + "/" + std::to_string(plan_.options.share_count);
    record(r);
  }
  for (const auto& nb : plan_.notebooks) {
    const std::string h = sha256_file(nb.input);
    hashes_[nb.input] = h;
    auto it = previous.find(nb.input);
    if (it != previous.end() && is_ok(it->second) && !h.empty() &&
        (it->second.input_sha256 == h || (plan_.options.inplace && it->second.output_sha256 == h))) {
      RunRecord r = it->second;
      r.resumed = true;
      r.notebook = nb.name;
      record(r);
      continue;
    }
    pending_.push_back(nb);
  }
  return ok();
}

void Executor::record(const RunRecord& r) {
  records_.push_back(r);
  if (report_ && !r.resumed) {
    std::fputs((to_json(r).dump(-1, ' ', false, json::error_handler_t::replace) + "\n").c_str(), report_);
    std::fflush(report_);
  }
  progress_.finished(r);
}

void Executor::start(const PlannedNotebook& nb) {
  auto w = std::make_unique<Worker>();
  w->nb = nb;
  w->rec.notebook = nb.name;
  w->rec.input = nb.input;
  w->rec.output = nb.output;
  w->rec.input_sha256 = hashes_[nb.input];
  w->rec.kernel = plan_.options.kernel;
  w->rec.host = hostname();
  w->rec.share = std::to_string(plan_.options.share_index) + "/" + std::to_string(plan_.options.share_count);
  w->rec.started = utc_now();
  w->start = Clock::now();
  const RunOptions& o = plan_.options;
  if (o.notebook_timeout)
    w->deadline = w->start + std::chrono::seconds(*o.notebook_timeout + o.startup_timeout) + kDeadlineSlack;
  std::error_code ec;
  if (!o.inplace) fs::create_directories(fs::path(nb.output).parent_path(), ec);
  json job = {{"input", nb.input},
              {"output", nb.output},
              {"kernel", o.kernel},
              {"timeout", o.timeout ? json(*o.timeout) : json(nullptr)},
              {"notebook_timeout", o.notebook_timeout ? json(*o.notebook_timeout) : json(nullptr)},
              {"startup_timeout", o.startup_timeout},
              {"allow_errors", o.allow_errors},
              {"kernel_options", o.kernel_options},
              {"override", o.overrides}};
  const std::string job_text = job.dump(-1, ' ', false, json::error_handler_t::replace);
  int ev[2], er[2];
  if (pipe2(ev, O_CLOEXEC) != 0 || pipe2(er, O_CLOEXEC) != 0) {
    w->rec.status = "could-not-start";
    w->rec.detail = std::string("pipe: ") + std::strerror(errno);
    record(w->rec);
    return;
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    // Dies with the orchestrator, whatever kills it; the launcher then
    // sees its client gone and stops the kernel.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(125);
    // Its own process group: the terminal's Ctrl-C reaches the
    // orchestrator only, which stops the workers in order.
    setpgid(0, 0);
    int e = fcntl(ev[1], F_DUPFD_CLOEXEC, 10), r = fcntl(er[1], F_DUPFD_CLOEXEC, 10);
    int l = fcntl(rt_.lifeline.get(), F_DUPFD_CLOEXEC, 10);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (e < 0 || r < 0 || l < 0 || null < 0 || dup2(null, 0) < 0 || dup2(r, 1) < 0 || dup2(r, 2) < 0 ||
        dup2(e, 3) < 0 || dup2(l, 4) < 0)
      _exit(125);
    if (chdir(nb.workdir.c_str()) != 0) {
      // the worker reports the unreadable notebook itself
    }
    setenv("JUPYTER_RUNTIME_DIR", rt_.path.c_str(), 1);
    setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1", 1);
    setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
    if (pool_.active()) setenv("IK_POOL_RUN", pool_.token().c_str(), 1);  // its launchers claim from the run's pool
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execl(setup_.python.c_str(), setup_.python.c_str(), setup_.worker.c_str(), job_text.c_str(),
          static_cast<char*>(nullptr));
    std::fprintf(stderr, "isolated-kernel-launcher: cannot run %s: %s\n", setup_.python.c_str(), std::strerror(errno));
    _exit(127);
  }
  close(ev[1]);
  close(er[1]);
  w->events = UniqueFd(ev[0]);
  w->err = UniqueFd(er[0]);
  if (pid < 0) {
    w->rec.status = "could-not-start";
    w->rec.detail = std::string("fork: ") + std::strerror(errno);
    record(w->rec);
    return;
  }
  setpgid(pid, pid);  // also from here: no race with a signal to the group
  fcntl(w->events.get(), F_SETFL, O_NONBLOCK);
  fcntl(w->err.get(), F_SETFL, O_NONBLOCK);
  w->pid = pid;
  progress_.started(nb.name);
  running_[pid] = std::move(w);
}

// Reads the non-blocking `fd` until it has nothing more for now, giving each
// chunk to `take`; closes it at end of file.
template <typename Take>
void read_available(UniqueFd& fd, Take take) {
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n <= 0) {
      if (n == 0) fd.reset();
      return;
    }
    take(buf, static_cast<size_t>(n));
  }
}

void Executor::on_events(Worker& w) {
  read_available(w.events, [&](const char* p, size_t n) { w.ev_buf.append(p, n); });
  size_t nl;
  while ((nl = w.ev_buf.find('\n')) != std::string::npos) {
    auto j = json::parse(w.ev_buf.substr(0, nl), nullptr, false);
    w.ev_buf.erase(0, nl + 1);
    if (!j.is_object() || !j.contains("event")) continue;
    const std::string e = j["event"].is_string() ? j["event"].get<std::string>() : "";
    if (e == "ready") {
      w.ready = true;
      if (j.contains("cells") && j["cells"].is_number_integer()) w.cells = j["cells"].get<int>();
    } else if (e == "cell") {
      if (j.contains("cell") && j["cell"].is_number_integer()) w.cell = j["cell"].get<int>();
    } else if (e == "done") {
      w.done = j;
    }
  }
}

void Executor::on_stderr(Worker& w) {
  read_available(w.err, [&](const char* p, size_t n) {
    w.tail.append(p, n);
    if (w.tail.size() > 2 * kTailBytes) w.tail.erase(0, w.tail.size() - kTailBytes);
  });
}

void Executor::finish(Worker& w, int status) {
  if (w.events.valid()) on_events(w);
  if (w.err.valid()) on_stderr(w);
  WorkerEnd end;
  end.done = w.done;
  end.saw_ready = w.ready;
  end.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  end.stderr_tail = w.tail;
  end.stopping = stop_signal_ != 0;
  end.deadline = w.deadline_hit;
  end.memory_limit = setup_.memory_limit;
  end.nproc_limit = setup_.nproc_limit;
  if (const std::string taken = port_taken_at_start(end);
      !taken.empty() && port_retries_[w.nb.input]++ < kPortRetries) {
    // Nothing of the notebook ran: start it again first, with new ports.
    progress_.note("isolated-kernel run: " + w.nb.name + ": " + taken + "; starting its kernel again with other ports");
    pending_.push_front(w.nb);
    return;
  }
  apply_verdict(end, w.rec);
  w.rec.seconds = std::chrono::duration<double>(Clock::now() - w.start).count();
  if (w.done && w.done->contains("output_written") && (*w.done)["output_written"] == true)
    w.rec.output_sha256 = sha256_file(w.nb.output);
  else if (!plan_.options.inplace) w.rec.output.clear();
  record(w.rec);
}

void Executor::reap() {
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    auto it = running_.find(pid);
    if (it == running_.end()) continue;  // the janitor is waited for at the end
    finish(*it->second, status);
    running_.erase(it);
  }
}

void Executor::stop(int sig) {
  if (stop_signal_ == 0) {
    stop_signal_ = sig;
    pending_.clear();
    progress_.note("isolated-kernel run: stopping (" + std::string(sigabbrev_np(sig) ? sigabbrev_np(sig) : "signal") +
                   "): shutting down " + std::to_string(running_.size()) + " kernel(s); again to kill them at once");
    for (auto& [pid, w] : running_) kill(-pid, SIGTERM);
    kill_at_ = Clock::now() + kStopGrace;
  } else {
    kill_at_ = Clock::now();
  }
}

std::vector<RunningView> Executor::running_view() const {
  std::vector<RunningView> v;
  for (const auto& [pid, w] : running_) v.push_back({w->nb.name, w->cell, w->cells, w->start});
  return v;
}

int Executor::run() {
  // SIGCHLD, SIGINT, SIGTERM, SIGHUP arrive on a signalfd in the poll loop.
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGCHLD, SIGINT, SIGTERM, SIGHUP}) sigaddset(&mask, s);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  sigfd_ = UniqueFd(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd_.valid()) return print_error(sys_error("signalfd"));
  if (auto s = prepare(); !s) return print_error(s.error());
  const auto t0 = Clock::now();
  const bool terminal = isatty(STDERR_FILENO) != 0;
  auto last_draw = Clock::time_point{};
  while (!pending_.empty() || !running_.empty()) {
    while (!pending_.empty() && running_.size() < plan_.slots && stop_signal_ == 0) {
      PlannedNotebook nb = pending_.front();
      pending_.pop_front();
      start(nb);
    }
    {
      // The run's pool needs no more sandboxes than kernels still to start.
      size_t to_start = pending_.size();
      for (const auto& [pid, w] : running_) to_start += w->ready ? 0 : 1;
      pool_.shrink_to(static_cast<int>(to_start));
    }
    if (running_.empty()) continue;
    std::vector<pollfd> fds{{sigfd_.get(), POLLIN, 0}};
    std::vector<std::pair<Worker*, bool>> who{{nullptr, false}};
    for (auto& [pid, w] : running_) {
      if (w->events.valid()) fds.push_back({w->events.get(), POLLIN, 0}), who.emplace_back(w.get(), true);
      if (w->err.valid()) fds.push_back({w->err.get(), POLLIN, 0}), who.emplace_back(w.get(), false);
    }
    poll(fds.data(), fds.size(), terminal ? 200 : 1000);
    for (size_t i = 1; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      if (who[i].second) on_events(*who[i].first);
      else on_stderr(*who[i].first);
    }
    if (fds[0].revents) {
      signalfd_siginfo si{};
      while (read(sigfd_.get(), &si, sizeof si) == sizeof si)
        if (si.ssi_signo != SIGCHLD) stop(static_cast<int>(si.ssi_signo));
    }
    reap();
    const auto now = Clock::now();
    for (auto& [pid, w] : running_)
      if (now > w->deadline && !w->deadline_hit) {
        w->deadline_hit = true;  // the worker's own --notebook-timeout did not end it
        kill(-pid, SIGKILL);
      }
    if (now >= kill_at_ && !killed_) {
      killed_ = true;
      for (auto& [pid, w] : running_) kill(-pid, SIGKILL);
    }
    if (terminal && now - last_draw > std::chrono::milliseconds(200)) {
      progress_.draw(running_view());
      last_draw = now;
    }
  }
  progress_.clear();
  if (report_) std::fclose(report_);
  report_ = nullptr;
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  int rc = 0;
  if (auto s = write_report(plan_.report_jsonl, records_); !s) rc = print_error(s.error());
  if (!plan_.options.report.empty())
    if (auto s = write_report(plan_.options.report, records_); !s) rc = print_error(s.error());
  std::fputs(
      summary_table(records_, wall, plan_.options.report.empty() ? plan_.report_jsonl : plan_.options.report).c_str(),
      stdout);
  std::fflush(stdout);
  if (stop_signal_) return 128 + stop_signal_;
  if (rc) return rc;
  for (const auto& r : records_)
    if (!is_ok(r)) return 1;
  return 0;
}

}  // namespace

std::string find_worker() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("IK_DATA_DIR")) candidates.push_back(std::string(env) + "/ik_run_notebook.py");
  candidates.push_back(self_dir() + "/../share/isolated-kernel/ik_run_notebook.py");
  candidates.push_back(std::string(IK_DATADIR) + "/ik_run_notebook.py");
#ifdef IK_SOURCE_DIR
  candidates.push_back(std::string(IK_SOURCE_DIR) + "/share/run/ik_run_notebook.py");
#endif
  for (const auto& c : candidates)
    if (access(c.c_str(), R_OK) == 0) return c;
  return {};
}

int execute_plan(const RunPlan& plan, const ExecSetup& setup) {
  auto rt = RuntimeDir::create();
  if (!rt) return print_error(rt.error());
  // Sized by -j, at most the notebooks (fewer when --resume skips some: shrunk as it goes).
  RunPool pool = RunPool::open(
      setup.spec, plan.options, static_cast<int>(std::min<size_t>(plan.slots, plan.notebooks.size())),
      {{"JUPYTER_RUNTIME_DIR", rt->path}, {"PYDEVD_DISABLE_FILE_VALIDATION", "1"}, {"PYTHONDONTWRITEBYTECODE", "1"}},
      setup.python);
  if (!pool.note().empty()) std::fprintf(stderr, "isolated-kernel run: %s\n", pool.note().c_str());
  int rc;
  {
    Executor ex(plan, setup, *rt, pool);
    rc = ex.run();
  }
  // After the workers: the pool ends with the run (its sandboxes gone before we return).
  if (const std::string said = pool.release(); !said.empty())
    std::fprintf(stderr, "isolated-kernel run: %s\n", said.c_str());
  // Our write end closes: the janitor removes the directory once the
  // workers (which hold copies) are gone too.
  rt->lifeline.reset();
  int status;
  while (waitpid(rt->janitor, &status, 0) < 0 && errno == EINTR) {
  }
  return rc;
}

}  // namespace ik::batch
