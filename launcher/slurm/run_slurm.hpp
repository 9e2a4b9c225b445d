// `isolated-kernel run --slurm`, `--collect DIR`: submits the run as one
// Slurm job array, follows the results as they land (same progress and
// table as a local run), cancels the array on Ctrl-C. The design is in
// run_slurm_plan.hpp; the local run's in batch/run_exec.hpp.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "batch/run_plan.hpp"
#include "slurm/run_slurm_plan.hpp"

namespace ik::slurm {

// --slurm, --tasks, --slurm-opt, --no-wait, --collect on `run`.
void add_slurm_options(CLI::App& run, SlurmRunOptions& o);
// Usage checks that need every option (after parsing).
Status check_slurm_options(const SlurmRunOptions& o, const batch::RunOptions& run);

// Submits PLAN (share 0/1: every notebook) and, unless --no-wait, follows
// it. Returns the exit status of `run` (0 all ok, 1 some failed, 2 usage,
// 125 could not submit, 128+N stopped by signal N after cancelling the job).
int submit_run(const batch::RunPlan& plan, const SlurmRunOptions& o);

// The table of a submitted run's output directory. 0 all ok, 1 some failed
// or still pending (said on stderr), 2 not such a directory.
int collect_run(const std::string& dir);

}  // namespace ik::slurm
