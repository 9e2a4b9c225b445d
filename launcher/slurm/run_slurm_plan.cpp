#include "slurm/run_slurm_plan.hpp"

#include <algorithm>

#include "parse/units.hpp"

namespace ik::slurm {
namespace {

constexpr std::uint64_t kMiB = 1024ull * 1024;
// Outside the kernel's own limit: the nbclient worker and the launcher per
// slot, and `run` itself per task (measured RSS is ~60-120 MB each; margin).
constexpr std::uint64_t kPerSlotOverhead = 256 * kMiB;
constexpr std::uint64_t kPerTaskOverhead = 512 * kMiB;

// Options that take a value, as "--opt V" or "--opt=V", that tasks must not get.
const char* const kValued[] = {"--tasks", "--slurm-opt", "--collect", "--report", "--jobs", "-j"};
const char* const kFlags[] = {"--slurm", "--no-wait", "--dry-run", "-n"};

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

}  // namespace

std::vector<std::string> strip_slurm_args(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {  // the rest are inputs
      out.insert(out.end(), args.begin() + static_cast<long>(i), args.end());
      break;
    }
    if (std::find(std::begin(kFlags), std::end(kFlags), a) != std::end(kFlags)) continue;
    bool dropped = false;
    for (const char* v : kValued) {
      const std::string opt = v;
      if (a == opt) {
        ++i;  // and its value
        dropped = true;
      } else if (starts_with(a, opt + "=") || (opt == "-j" && a.size() > 2 && starts_with(a, "-j"))) {
        dropped = true;
      }
      if (dropped) break;
    }
    if (!dropped) out.push_back(a);
  }
  return out;
}

Result<std::optional<std::uint64_t>> slurm_opt_memory(const std::vector<std::string>& opts) {
  std::optional<std::uint64_t> mem;
  for (size_t i = 0; i < opts.size(); ++i) {
    std::string v;
    if (starts_with(opts[i], "--mem=")) v = opts[i].substr(6);
    else if (opts[i] == "--mem" && i + 1 < opts.size()) v = opts[i + 1];
    else continue;
    // Slurm's default unit is megabytes.
    if (!v.empty() && std::isdigit(static_cast<unsigned char>(v.back()))) v += "M";
    auto b = parse_size(v, "--slurm-opt=--mem");
    if (!b) return b.error();
    mem = *b;
  }
  return mem;
}

std::string shell_quote(const std::string& w) {
  if (!w.empty() && w.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-") ==
                        std::string::npos)
    return w;
  std::string q = "'";
  for (char c : w) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string slurm_megabytes(std::uint64_t bytes) { return std::to_string((bytes + kMiB - 1) / kMiB) + "M"; }

std::string share_report_path(const std::string& dir, unsigned index, unsigned count) {
  if (count <= 1) return dir + "/report.jsonl";
  return dir + "/report.share-" + std::to_string(index) + "-of-" + std::to_string(count) + ".jsonl";
}

Result<Submission> plan_submission(const RunShape& shape, const SlurmRunOptions& o) {
  Submission s;
  const unsigned n = static_cast<unsigned>(shape.notebooks.size());
  if (n == 0) return usage_error("--slurm: no notebooks to run", "give notebooks or directories that hold some");
  s.tasks = o.tasks ? std::min(o.tasks, n) : std::clamp((n + 3) / 4, 1u, 100u);
  s.shares.resize(s.tasks);
  for (unsigned i = 0; i < n; ++i) s.shares[i % s.tasks].push_back(shape.notebooks[i]);
  const unsigned per_task = (n + s.tasks - 1) / s.tasks;
  s.slots = std::clamp(shape.slots, 1u, per_task);

  auto asked = slurm_opt_memory(o.slurm_opts);
  if (!asked) return asked.error();
  if (shape.memory_bytes) {
    s.kernel_memory_bytes = shape.memory_bytes;
    s.task_memory_bytes = s.slots * (*shape.memory_bytes + kPerSlotOverhead) + kPerTaskOverhead;
    if (*asked && **asked < *s.task_memory_bytes)
      return usage_error("--slurm-opt=--mem=" + slurm_megabytes(**asked) + " is less than " + std::to_string(s.slots) +
                             " kernels of --memory " + format_size(*shape.memory_bytes) + " need (" +
                             slurm_megabytes(*s.task_memory_bytes) + " with the workers)",
                         "lower -j or --memory, or ask for more");
  } else if (*asked) {
    const std::uint64_t fixed = kPerTaskOverhead + s.slots * kPerSlotOverhead;
    if (**asked <= fixed + s.slots * 64 * kMiB)
      return usage_error("--slurm-opt=--mem=" + slurm_megabytes(**asked) + " leaves too little for " +
                             std::to_string(s.slots) + " kernels",
                         "ask for at least " + slurm_megabytes(fixed + s.slots * 256 * kMiB) + " or lower -j");
    s.kernel_memory_bytes = (**asked - fixed) / s.slots / kMiB * kMiB;
  }
  if (shape.notebook_timeout) {
    const std::uint64_t waves = (per_task + s.slots - 1) / s.slots;
    const std::uint64_t secs = waves * (*shape.notebook_timeout + shape.startup_timeout) + 300;
    s.time_minutes = (secs + 59) / 60;
  }

  s.script_path = shape.output_dir + "/slurm/run.sbatch";
  const std::string k = std::to_string(s.tasks);
  s.task_argv = {shape.self, "run"};
  s.task_argv.insert(s.task_argv.end(), shape.run_args.begin(), shape.run_args.end());
  // Options go before a "--" that ends them.
  auto at = std::find(s.task_argv.begin(), s.task_argv.end(), "--");
  std::vector<std::string> extra = {"--share", "${SLURM_ARRAY_TASK_ID}/" + k, "-j", std::to_string(s.slots)};
  if (s.kernel_memory_bytes && !shape.memory_bytes)
    extra.push_back("--memory=" + slurm_megabytes(*s.kernel_memory_bytes));
  s.task_argv.insert(at, extra.begin(), extra.end());

  std::string sh = "#!/bin/sh\n"
                   "# Written by `isolated-kernel run --slurm`: array task I of " +
                   k + " runs notebooks I, I+" + k + ", I+2x" + k +
                   "... of the sorted list\n"
                   "# (isolated-kernel run --share I/" +
                   k + "); results land in " + shape.output_dir + ".\n";
  sh += "#SBATCH --job-name=isolated-kernel-run\n";
  sh += "#SBATCH --array=0-" + std::to_string(s.tasks - 1) + "\n";
  sh += "#SBATCH --nodes=1\n#SBATCH --ntasks=1\n";
  sh += "#SBATCH --cpus-per-task=" + std::to_string(s.slots) + "\n";
  if (s.task_memory_bytes) sh += "#SBATCH --mem=" + slurm_megabytes(*s.task_memory_bytes) + "\n";
  if (s.time_minutes) sh += "#SBATCH --time=" + std::to_string(*s.time_minutes) + "\n";
  sh += "exec";
  for (const auto& w : s.task_argv)
    sh += " " + (w.find("${SLURM_ARRAY_TASK_ID}") != std::string::npos ? "\"" + w + "\"" : shell_quote(w));
  sh += "\n";
  s.script = sh;

  // Paths go on the command line (no quoting rules of #SBATCH lines to meet);
  // the user's words last, so they win.
  s.sbatch_argv = {"sbatch", "--parsable", "--chdir=" + shape.cwd,
                   "--output=" + shape.output_dir + "/slurm/task-%a.log"};
  s.sbatch_argv.insert(s.sbatch_argv.end(), o.slurm_opts.begin(), o.slurm_opts.end());
  s.sbatch_argv.push_back(s.script_path);
  return s;
}

nlohmann::json submission_to_json(const Submission& s) {
  nlohmann::json j{{"tasks", s.tasks},   {"slots_per_task", s.slots}, {"script_path", s.script_path},
                   {"script", s.script}, {"sbatch", s.sbatch_argv},   {"shares", s.shares}};
  j["task_memory"] = s.task_memory_bytes ? nlohmann::json(slurm_megabytes(*s.task_memory_bytes)) : nlohmann::json();
  j["kernel_memory"] = s.kernel_memory_bytes ? nlohmann::json(format_size(*s.kernel_memory_bytes)) : nlohmann::json();
  j["time_minutes"] = s.time_minutes ? nlohmann::json(*s.time_minutes) : nlohmann::json();
  return j;
}

}  // namespace ik::slurm
