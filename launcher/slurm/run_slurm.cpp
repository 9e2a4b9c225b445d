#include "slurm/run_slurm.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "batch/run_progress.hpp"
#include "batch/run_record.hpp"
#include "common/fd.hpp"
#include "common/print_error.hpp"
#include "kernelspec/subprocess.hpp"
#include "parse/units.hpp"
#include "slurm/cancel_guard.hpp"
#include "slurm/slurm_cli.hpp"

namespace ik::slurm {
namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using batch::RunRecord;

namespace {

constexpr auto kSqueueEvery = std::chrono::milliseconds(1000);
constexpr auto kCancelWait = std::chrono::seconds(60);

// The words after "run" on this process's command line (the task runs the
// same options; /proc keeps them exactly as typed).
std::vector<std::string> run_words() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> words;
  for (std::string w; std::getline(in, w, '\0');) words.push_back(w);
  auto at = std::find(words.begin() + (words.empty() ? 0 : 1), words.end(), "run");
  return at == words.end() ? std::vector<std::string>{} : std::vector<std::string>(at + 1, words.end());
}

std::optional<std::uint64_t> memory_option(const std::vector<std::string>& kernel_options) {
  std::optional<std::uint64_t> m;
  for (size_t i = 0; i < kernel_options.size(); ++i) {
    std::string v;
    if (kernel_options[i] == "--memory" && i + 1 < kernel_options.size()) v = kernel_options[i + 1];
    else if (kernel_options[i].rfind("--memory=", 0) == 0) v = kernel_options[i].substr(9);
    else continue;
    if (auto b = parse_size(v, "--memory")) m = *b;
  }
  return m;
}

std::string one_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (auto& c : s)
    if (c == '\n') c = ' ';
  return s;
}

Status write_text(const std::string& path, const std::string& text, fs::perms mode) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << text;
    if (!f.flush()) return sys_error("write " + tmp, errno, "check that the output directory is writable");
  }
  std::error_code ec;
  fs::permissions(tmp, mode, ec);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return sys_error("rename " + tmp + " to " + path);
  return ok();
}

// What --collect needs to know about a submission (OUTDIR/slurm/job.json).
struct JobFile {
  std::string job_id;
  unsigned tasks = 1;
  std::string submitted;  // UTC
  bool resume = false;
  std::string report;  // --report FILE of the submitter, "" when none
  // Expected records in plan order: input key -> (name, output, task).
  struct Entry {
    std::string input, name, output;
    unsigned task = 0;
  };
  std::vector<Entry> entries;
};

json to_json(const JobFile& j) {
  json e = json::array();
  for (const auto& x : j.entries)
    e.push_back({{"input", x.input}, {"name", x.name}, {"output", x.output}, {"task", x.task}});
  return {{"job_id", j.job_id}, {"tasks", j.tasks},   {"submitted", j.submitted},
          {"resume", j.resume}, {"report", j.report}, {"notebooks", e}};
}

Result<JobFile> read_job_file(const std::string& dir) {
  const std::string path = dir + "/slurm/job.json";
  std::ifstream in(path);
  if (!in)
    return usage_error(path + ": not found", "--collect takes the --output-dir of an 'isolated-kernel run --slurm'");
  auto j = json::parse(in, nullptr, false);
  if (!j.is_object() || !j.contains("notebooks")) return usage_error(path + ": not a job file of isolated-kernel run");
  JobFile f;
  f.job_id = j.value("job_id", "");
  f.tasks = j.value("tasks", 1u);
  f.submitted = j.value("submitted", "");
  f.resume = j.value("resume", false);
  f.report = j.value("report", "");
  for (const auto& e : j["notebooks"])
    f.entries.push_back({e.value("input", ""), e.value("name", ""), e.value("output", ""), e.value("task", 0u)});
  return f;
}

// The records the tasks wrote so far, by input (the last one wins).
std::map<std::string, RunRecord> read_share_records(const std::string& dir, const JobFile& job) {
  std::map<std::string, RunRecord> out;
  for (unsigned i = 0; i < job.tasks; ++i) {
    std::ifstream in(share_report_path(dir, i, job.tasks));
    for (std::string line; std::getline(in, line);) {
      auto j = json::parse(line, nullptr, false);
      if (!j.is_object()) continue;  // a line being written
      RunRecord r = batch::record_from_json(j);
      // With --resume the share files keep earlier runs' lines (without it
      // they were removed before submitting: no clock of a node is trusted then).
      if (r.input.empty() || (job.resume && !r.resumed && r.started < job.submitted)) continue;
      out[r.input] = r;
    }
  }
  return out;
}

struct TaskState {
  unsigned task = 0;
  std::string state, node;
};

// The array's tasks that Slurm still knows, or nullopt when squeue failed
// (the controller is unreachable: try again later).
std::optional<std::vector<TaskState>> query_tasks(const std::string& job_id) {
  auto r = run_capture({"squeue", "--noheader", "--array", "--jobs=" + job_id, "--format=%K|%T|%N"}, {}, 30);
  if (!r) return std::nullopt;
  if (r->status != 0) {
    // A job that ended more than MinJobAge ago is unknown to squeue.
    if (r->err.find("Invalid job id") != std::string::npos) return std::vector<TaskState>{};
    return std::nullopt;
  }
  std::vector<TaskState> out;
  std::istringstream in(r->out);
  for (std::string line; std::getline(in, line);) {
    auto a = line.find('|'), b = line.find('|', a == std::string::npos ? a : a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    TaskState t;
    try {
      t.task = static_cast<unsigned>(std::stoul(line.substr(0, a)));
    } catch (...) {
      continue;  // "N/A" or a range of a job not yet expanded
    }
    t.state = line.substr(a + 1, b - a - 1);
    t.node = line.substr(b + 1);
    out.push_back(t);
  }
  return out;
}

// The last non-empty line of a task's log: why it ran nothing, often.
std::string log_tail(const std::string& path) {
  std::ifstream in(path);
  std::string last;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) last = line;
  return last;
}

// Records for what has none: the job ended (or is still pending/running).
std::vector<RunRecord> complete_records(const std::string& dir, const JobFile& job,
                                        const std::map<std::string, RunRecord>& have, bool job_active, bool cancelled) {
  std::vector<RunRecord> out;
  for (const auto& e : job.entries) {
    auto it = have.find(e.input);
    if (it != have.end()) {
      out.push_back(it->second);
      continue;
    }
    RunRecord r;
    r.notebook = e.name;
    r.input = e.input;
    r.output = e.output;
    r.share = std::to_string(e.task) + "/" + std::to_string(job.tasks);
    const std::string log = dir + "/slurm/task-" + std::to_string(e.task) + ".log";
    if (job_active) {
      r.status = "pending";
      r.detail = "Slurm job " + job.job_id + " has not run it yet";
    } else if (cancelled) {
      r.status = "interrupted";
      r.detail = "the Slurm job " + job.job_id + " was cancelled";
    } else {
      r.status = "could-not-start";
      std::string tail = log_tail(log);
      r.detail = "array task " + std::to_string(e.task) + " of job " + job.job_id + " ended without a result" +
                 (tail.empty() ? "" : ": " + tail) + " (see " + log + ")";
    }
    out.push_back(r);
  }
  return out;
}

int finish(const std::string& dir, const JobFile& job, const std::vector<RunRecord>& records, double wall,
           int stop_signal, bool write = true) {
  int rc = 0;
  if (write)
    if (auto s = batch::write_report(dir + "/report.jsonl", records); !s) rc = print_error(s.error());
  if (write && !job.report.empty())
    if (auto s = batch::write_report(job.report, records); !s) rc = print_error(s.error());
  std::fputs(batch::summary_table(records, wall, job.report.empty() ? dir + "/report.jsonl" : job.report).c_str(),
             stdout);
  std::fflush(stdout);
  if (stop_signal) return 128 + stop_signal;
  if (rc) return rc;
  for (const auto& r : records)
    if (!batch::is_ok(r)) return 1;
  return 0;
}

class Follower {
 public:
  Follower(std::string dir, JobFile job)
      : dir_(std::move(dir)),
        job_(std::move(job)),
        terminal_(isatty(STDERR_FILENO) != 0),
        progress_(terminal_, job_.entries.size(), 0) {}

  int run();

 private:
  void read_new();
  void cancel(int sig);
  std::string dir_;
  JobFile job_;
  bool terminal_;
  batch::Progress progress_;
  std::map<std::string, RunRecord> seen_;
  std::vector<TaskState> tasks_;
  std::map<unsigned, Clock::time_point> task_started_;
  int stop_signal_ = 0;
  Clock::time_point cancelled_at_;
};

void Follower::read_new() {
  for (auto& [input, r] : read_share_records(dir_, job_)) {
    if (seen_.count(input)) continue;
    progress_.finished(r);
    seen_[input] = r;
  }
}

void Follower::cancel(int sig) {
  if (stop_signal_) return;
  stop_signal_ = sig;
  cancelled_at_ = Clock::now();
  progress_.note("isolated-kernel run: cancelling Slurm job " + job_.job_id + " (scancel)");
  auto r = run_capture({"scancel", job_.job_id}, {}, 30);
  if (!r || r->status != 0)
    progress_.note("isolated-kernel run: scancel " + job_.job_id +
                   " failed: " + (r ? one_line(r->err) : r.error().describe()));
}

int Follower::run() {
  // SIGINT, SIGTERM, SIGHUP arrive on a signalfd: Ctrl-C cancels the job.
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&mask, s);
  sigset_t old;
  sigprocmask(SIG_BLOCK, &mask, &old);
  UniqueFd sigfd(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd.valid()) return print_error(sys_error("signalfd"));
  const auto t0 = Clock::now();
  auto last_query = Clock::time_point{};
  bool active = true;
  while (true) {
    read_new();
    if (Clock::now() - last_query >= kSqueueEvery) {
      last_query = Clock::now();
      if (auto t = query_tasks(job_.job_id)) {
        tasks_ = *t;
        active = !tasks_.empty();
        for (const auto& ts : tasks_)
          if (ts.state == "RUNNING" && !task_started_.count(ts.task)) {
            task_started_[ts.task] = Clock::now();
            if (!terminal_) progress_.note("array task " + std::to_string(ts.task) + " running on " + ts.node);
          }
      }
      if (!active) break;
      if (stop_signal_ && Clock::now() - cancelled_at_ > kCancelWait) break;
    }
    if (terminal_) {
      std::vector<batch::RunningView> views;
      for (const auto& ts : tasks_)
        if (ts.state == "RUNNING")
          // cells -1: the line names the task, not a notebook's cell.
          views.push_back({"array task " + std::to_string(ts.task) + " on " + ts.node, 0, -1, task_started_[ts.task]});
      progress_.draw(views);
    }
    pollfd p{sigfd.get(), POLLIN, 0};
    if (poll(&p, 1, 250) > 0) {
      signalfd_siginfo si{};
      while (read(sigfd.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si))
        cancel(static_cast<int>(si.ssi_signo));
    }
  }
  read_new();  // what landed while the last tasks ended
  progress_.clear();
  sigprocmask(SIG_SETMASK, &old, nullptr);
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  return finish(dir_, job_, complete_records(dir_, job_, seen_, false, stop_signal_ != 0), wall, stop_signal_);
}

}  // namespace

void add_slurm_options(CLI::App& run, SlurmRunOptions& o) {
  const char* g = "Slurm";
  run.add_flag("--slurm", o.slurm, "Submit the run to Slurm as one job array and follow it (sbatch, squeue)")->group(g);
  run.add_option("--tasks", o.tasks, "Array tasks to spread the notebooks over (default: one per 4 notebooks)")
      ->type_name("K")
      ->each([](const std::string& v) {
        // A validator (CLI::Range) would print itself into --help.
        if (v.find_first_not_of("0123456789") != std::string::npos || v.find_first_not_of('0') == std::string::npos)
          throw CLI::ValidationError("--tasks " + v, "expected a count of array tasks, at least 1");
      })
      ->group(g);
  run.add_option("--slurm-opt", o.slurm_opts,
                 "sbatch option for every task, e.g. --slurm-opt=--partition=batch (repeatable; --mem, --time "
                 "override the derived ones)")
      ->type_name("OPT")
      ->allow_extra_args(false)
      ->group(g);
  run.add_flag("--no-wait", o.no_wait, "With --slurm: print the job id and return (see --collect)")->group(g);
  run.add_option("--collect", o.collect, "Print the table of an earlier --slurm run's output directory")
      ->type_name("DIR")
      ->group(g);
}

Status check_slurm_options(const SlurmRunOptions& o, const batch::RunOptions& run) {
  if (!o.collect.empty()) {
    if (o.slurm || !run.inputs.empty())
      return usage_error("--collect DIR takes no notebooks and no --slurm", "isolated-kernel run --collect OUTDIR");
    return ok();
  }
  if (!o.slurm && (o.tasks || !o.slurm_opts.empty() || o.no_wait))
    return usage_error("--tasks, --slurm-opt and --no-wait need --slurm");
  if (o.slurm && run.share_count > 1) return usage_error("--share is what --slurm gives each task: leave it out");
  if (run.inputs.empty()) return usage_error("no notebooks given", "isolated-kernel run [options] NOTEBOOK|DIR...");
  return ok();
}

int submit_run(const batch::RunPlan& plan, const SlurmRunOptions& o) {
  std::error_code ec;
  RunShape shape;
  shape.self = fs::read_symlink("/proc/self/exe", ec).string();
  if (ec) return print_error(sys_error("find this program (/proc/self/exe)", ec.value()));
  shape.cwd = plan.cwd;
  shape.output_dir = plan.output_dir;
  for (const auto& nb : plan.notebooks) shape.notebooks.push_back(nb.name);
  shape.slots = plan.slots;
  shape.memory_bytes = memory_option(plan.options.kernel_options);
  shape.notebook_timeout = plan.options.notebook_timeout;
  shape.startup_timeout = plan.options.startup_timeout;
  shape.run_args = strip_slurm_args(run_words());
  auto sub = plan_submission(shape, o);
  if (!sub) return print_error(sub.error());
  if (plan.options.dry_run) {
    json j = batch::plan_to_json(plan);
    j["slurm"] = submission_to_json(*sub);
    std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  if (auto s = find_slurm_command("sbatch"); !s) return print_error(s.error());

  JobFile job;
  job.tasks = sub->tasks;
  job.resume = plan.options.resume;
  if (!plan.options.report.empty()) job.report = fs::absolute(plan.options.report, ec).string();
  for (size_t i = 0; i < plan.notebooks.size(); ++i)
    job.entries.push_back({plan.notebooks[i].input, plan.notebooks[i].name, plan.notebooks[i].output,
                           static_cast<unsigned>(i % sub->tasks)});
  for (const auto& d : plan.empty_dirs) job.entries.push_back({d, d, "", 0});

  // A submission that fails leaves no directory it made.
  const bool had_output_dir = fs::exists(plan.output_dir, ec);
  const bool had_slurm_dir = fs::exists(plan.output_dir + "/slurm", ec);
  auto undo = [&] {
    std::error_code e;
    if (!had_slurm_dir) fs::remove_all(plan.output_dir + "/slurm", e);
    else fs::remove(sub->script_path, e);
    if (!had_output_dir) fs::remove(plan.output_dir, e);  // only when empty
  };
  fs::create_directories(plan.output_dir + "/slurm", ec);
  if (ec)
    return print_error(sys_error("create " + plan.output_dir + "/slurm", ec.value(),
                                 "--output-dir must be writable (and shared with the compute nodes)"));
  // Results of an earlier run in this directory would look like this one's.
  if (!plan.options.resume)
    for (const auto& e : fs::directory_iterator(plan.output_dir, ec)) {
      const std::string n = e.path().filename().string();
      if (n == "report.jsonl" ||
          (n.rfind("report.share-", 0) == 0 && n.size() > 6 && n.substr(n.size() - 6) == ".jsonl"))
        fs::remove(e.path(), ec);
    }
  for (unsigned i = 0; i < sub->tasks; ++i)
    fs::remove(plan.output_dir + "/slurm/task-" + std::to_string(i) + ".log", ec);
  if (auto s = write_text(sub->script_path, sub->script, fs::perms(0755)); !s) {
    undo();
    return print_error(s.error());
  }

  // Armed before sbatch so no moment is left where a SIGKILLed submitter
  // leaves an unwatched job behind; --no-wait means the job goes on alone.
  std::optional<CancelGuard> guard;
  if (!o.no_wait) {
    auto scancel = find_slurm_command("scancel");
    if (!scancel) {
      undo();
      return print_error(scancel.error());
    }
    auto g = CancelGuard::start(*scancel, plan.output_dir + "/slurm/cancel.log");
    if (!g) {
      undo();
      return print_error(g.error());
    }
    guard.emplace(std::move(*g));
  }
  job.submitted = batch::utc_now();
  auto r = run_capture(sub->sbatch_argv, {}, 120);
  if (!r || r->status != 0) undo();
  if (!r) return print_error(r.error());
  if (r->status != 0)
    return print_error(Error{"sbatch " + sub->script_path, 0, one_line(r->err),
                             "check the --slurm-opt options ('sinfo' lists the partitions)", kExitSetup});
  job.job_id = one_line(r->out.substr(0, r->out.find_first_of(";\n")));
  if (guard) guard->job_submitted(job.job_id);
  if (auto s = write_text(plan.output_dir + "/slurm/job.json", to_json(job).dump(1) + "\n", fs::perms(0644)); !s)
    return print_error(s.error());
  std::fprintf(stderr,
               "isolated-kernel run: submitted Slurm job %s: %zu notebooks in %u array tasks of %u slot(s)%s%s\n",
               job.job_id.c_str(), plan.notebooks.size(), sub->tasks, sub->slots,
               sub->task_memory_bytes ? (", --mem=" + slurm_megabytes(*sub->task_memory_bytes)).c_str() : "",
               sub->time_minutes ? (", --time=" + std::to_string(*sub->time_minutes)).c_str() : "");
  if (o.no_wait) {
    std::printf("%s\n", job.job_id.c_str());
    std::fprintf(stderr, "isolated-kernel run: the table, once it ran: isolated-kernel run --collect %s\n",
                 plan.output_dir.c_str());
    return 0;
  }
  const int status = Follower(plan.output_dir, job).run();
  if (guard) guard->release();  // followed to its end (or cancelled by Ctrl-C)
  return status;
}

int collect_run(const std::string& dir_arg) {
  std::error_code ec;
  const std::string dir = fs::absolute(dir_arg, ec).lexically_normal().string();
  auto job = read_job_file(dir);
  if (!job) return print_error(job.error());
  auto have = read_share_records(dir, *job);
  bool active = false;
  if (find_slurm_command("squeue")) {
    auto t = query_tasks(job->job_id);
    active = t && !t->empty();
  }
  auto records = complete_records(dir, *job, have, active, false);
  if (active)
    std::fprintf(stderr, "isolated-kernel run: Slurm job %s is still running: %zu of %zu notebooks have a result\n",
                 job->job_id.c_str(), have.size(), job->entries.size());
  // Reports are written once the job is over (pending is no result).
  return finish(dir, *job, records, 0, 0, !active);
}

}  // namespace ik::slurm
