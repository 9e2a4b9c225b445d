// The `run` subcommand of isolated-kernel: its options (CLI11) and its
// entry point. main_isolated_kernel.cpp only adds and dispatches it.
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "batch/run_plan.hpp"
#include "slurm/run_slurm_plan.hpp"

namespace ik::batch {

class RunCommand {
 public:
  explicit RunCommand(CLI::App& parent);
  CLI::App* app() const { return app_; }
  // Checks the options, plans, and executes (or prints the plan); returns the exit status.
  int run();

 private:
  Status finish();
  CLI::App* app_;
  RunOptions o_;
  std::string timeout_, notebook_timeout_, startup_timeout_, share_;
  std::string memory_, nproc_, wall_time_, cpu_time_, nofile_, fsize_, limits_;
  std::vector<std::string> kernel_option_;
  ik::slurm::SlurmRunOptions slurm_;  // --slurm, --collect (launcher/slurm/run_slurm.hpp)
};

}  // namespace ik::batch
