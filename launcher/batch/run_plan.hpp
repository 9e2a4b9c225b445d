// `isolated-kernel run`: the options, the notebooks found, and the plan
// (pure data: which notebook runs, where its output goes, how many slots).
// The design note for the whole command (shares, records, output layout)
// is at the top of run_exec.hpp.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.hpp"

namespace ik::batch {

struct RunOptions {
  std::vector<std::string> inputs;  // NOTEBOOK|DIR as typed
  std::string kernel = "python3-isolated";
  unsigned jobs = 0;                     // 0: number of CPUs
  std::optional<std::uint64_t> timeout;  // per cell, seconds
  std::optional<std::uint64_t> notebook_timeout;
  std::uint64_t startup_timeout = 60;
  bool allow_errors = false;
  std::string output_dir = "run-output";  // also where report.jsonl lives (--resume, --collect)
  bool inplace = false;
  std::string report;  // --report FILE (.csv: CSV), besides OUTDIR/report.jsonl
  bool resume = false;
  bool dry_run = false;
  std::vector<std::string> kernel_options;    // launcher argv words for this run
  std::vector<std::string> overrides;         // the options above that replace the kernelspec's own
  unsigned share_index = 0, share_count = 1;  // --share I/K: run every K-th notebook from the I-th
};

// What discovery found for one argument.
struct Found {
  std::string arg;   // as typed
  std::string path;  // absolute, normalised
  bool is_dir = false;
  std::vector<std::string> notebooks;  // absolute paths, sorted (a file argument: itself)
};

struct PlannedNotebook {
  std::string name;     // shown and reported: relative to the current directory when under it
  std::string input;    // absolute
  std::string output;   // absolute (== input with --inplace)
  std::string workdir;  // the notebook's folder: the kernel's working directory
};

struct RunPlan {
  RunOptions options;
  std::string cwd;
  std::string output_dir;    // absolute
  std::string report_jsonl;  // OUTDIR/report.jsonl, or report.share-I-of-K.jsonl for a share
  unsigned slots = 1;
  std::vector<PlannedNotebook> notebooks;  // this share's, in order
  std::vector<std::string> empty_dirs;     // arguments that hold no notebook (reported as failures)
  std::size_t total_before_share = 0;
};

// Walks the arguments (the only part that reads the file system): a
// directory is searched for *.ipynb, skipping .ipynb_checkpoints and
// `skip_dir` (the output directory, when it lies inside an input).
// A missing argument is a usage error.
Result<std::vector<Found>> discover(const std::vector<std::string>& inputs, const std::string& cwd,
                                    const std::string& skip_dir);

// Pure: names, output paths (mirroring the input tree under the output
// directory), the share, the slots. Two inputs that would write the same
// output are a usage error.
Result<RunPlan> build_run_plan(const RunOptions& options, const std::vector<Found>& found, const std::string& cwd,
                               unsigned cpus);

nlohmann::json plan_to_json(const RunPlan& plan);

// "2/8" -> (2, 8); I < K.
Result<std::pair<unsigned, unsigned>> parse_share(const std::string& text);

}  // namespace ik::batch
