// Running a helper program (the Jupyter Python, a kernel interpreter) and
// capturing its output. Used by `isolated-kernel` only, never in a sandbox.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace ik {

struct ProcessOutput {
  int status = 0;  // exit status, 128+N on signal N
  std::string out;
  std::string err;
};

// Runs argv with the current environment plus `env` (empty value = unset),
// and waits for it, killing it after `timeout_seconds`.
Result<ProcessOutput> run_capture(const std::vector<std::string>& argv,
                                  const std::map<std::string, std::string>& env = {}, int timeout_seconds = 120);

// The Python that has jupyter_client ($IK_JUPYTER_PYTHON, else /usr/bin/python3).
std::string jupyter_python();

}  // namespace ik
