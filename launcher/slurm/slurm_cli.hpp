// Finding Slurm's client commands (sbatch, srun, squeue, scancel) with a
// clear error when they are missing.
#pragma once
#include <string>

#include "common/error.hpp"

namespace ik {

// The absolute path of NAME on PATH, or an error that says which package.
Result<std::string> find_slurm_command(const std::string& name);

}  // namespace ik
