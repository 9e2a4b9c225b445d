// `isolated-kernel run --slurm`: the job array that runs a batch on a
// cluster, as pure data (the batch script, the sbatch command line, the
// resources), printable with --dry-run and unit-tested.
//
// Design (builds on batch/run_exec.hpp's design note): each array task I of
// K runs `isolated-kernel run --share I/K` with the submitting command's own
// options and inputs, from the same working directory (sbatch --chdir), so
// every task discovers the same sorted list and takes its round-robin part,
// with -j slots inside the task. Tasks write the executed notebooks and
// OUTDIR/report.share-I-of-K.jsonl (one writer per file) on the shared
// filesystem; the submitter reads those files as they grow and asks squeue
// which tasks still run (sbatch --wait alone would poll at growing intervals).
// OUTDIR/slurm/ holds run.sbatch, job.json (what --collect needs) and one
// log per task (task-I.log).
//
// Resources: --cpus-per-task = the slots (-j); --mem = slots x (--memory +
// 256M for the kernel's worker and launcher) + 512M for `run` itself, so
// the sandbox's limit is what stops a notebook before Slurm does; when
// --slurm-opt=--mem=M is given without --memory, each kernel gets
// --memory=(M - 512M)/slots - 256M. --time = waves x (--notebook-timeout +
// --startup-timeout) + 5 min when --notebook-timeout is given (waves =
// notebooks per task / slots, rounded up). --slurm-opt words come last on
// the sbatch command line and win.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.hpp"

namespace ik::slurm {

struct SlurmRunOptions {
  bool slurm = false;
  unsigned tasks = 0;                   // 0: one per 4 notebooks, at most 100
  std::vector<std::string> slurm_opts;  // extra sbatch words (--partition=..., --account=...)
  bool no_wait = false;
  std::string collect;  // --collect DIR
};

// What the submission needs to know about the run (filled from the plan).
struct RunShape {
  std::string self;                               // this program's absolute path
  std::string cwd;                                // the submitter's working directory
  std::string output_dir;                         // absolute
  std::vector<std::string> notebooks;             // names, in the plan's order (all shares)
  unsigned slots = 1;                             // -j inside a task
  std::optional<std::uint64_t> memory_bytes;      // --memory for this run
  std::optional<std::uint64_t> notebook_timeout;  // seconds
  std::uint64_t startup_timeout = 60;
  std::vector<std::string> run_args;  // the run's words after "run", Slurm options removed
};

struct Submission {
  unsigned tasks = 1;
  unsigned slots = 1;
  std::optional<std::uint64_t> task_memory_bytes;    // --mem
  std::optional<std::uint64_t> kernel_memory_bytes;  // --memory given to the kernels
  std::optional<std::uint64_t> time_minutes;         // --time
  std::string script;                                // run.sbatch
  std::string script_path;                           // OUTDIR/slurm/run.sbatch
  std::vector<std::string> sbatch_argv;              // sbatch ... run.sbatch
  std::vector<std::string> task_argv;                // what one task runs (with $SLURM_ARRAY_TASK_ID)
  std::vector<std::vector<std::string>> shares;      // notebook names of each task
};

// The run's words without the options only the submitter uses (--slurm,
// --tasks, --slurm-opt, --no-wait, --collect, --dry-run, --report: the
// submitter writes the merged report; -j: each task gets its own). Pure.
std::vector<std::string> strip_slurm_args(const std::vector<std::string>& run_args);

// The value of `--mem=` in the --slurm-opt words, when given. Pure.
Result<std::optional<std::uint64_t>> slurm_opt_memory(const std::vector<std::string>& slurm_opts);

Result<Submission> plan_submission(const RunShape& shape, const SlurmRunOptions& options);

nlohmann::json submission_to_json(const Submission& s);

// 'word' quoting for the batch script (POSIX sh). Pure.
std::string shell_quote(const std::string& word);

// Slurm's size and time syntax: 1536M, 90 (minutes).
std::string slurm_megabytes(std::uint64_t bytes);

// OUTDIR/report.share-I-of-K.jsonl (report.jsonl when K is 1).
std::string share_report_path(const std::string& output_dir, unsigned index, unsigned count);

}  // namespace ik::slurm
