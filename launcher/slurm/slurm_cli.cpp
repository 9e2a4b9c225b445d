#include "slurm/slurm_cli.hpp"

#include <unistd.h>

#include <cstdlib>
#include <sstream>

namespace ik {

Result<std::string> find_slurm_command(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path && *path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string full = (dir.empty() ? "." : dir) + "/" + name;
    if (access(full.c_str(), X_OK) == 0) return full;
  }
  return usage_error(name + " not found on PATH: --slurm needs Slurm's client commands",
                     "run it on a cluster's login node, or install them (Debian: slurm-client)");
}

}  // namespace ik
