// Which host directories a wrapped kernel's program needs mounted read-only
// inside the sandbox (a conda or venv prefix, a user site, /opt/julia...):
// pure decisions on facts probed elsewhere (jupyter.hpp's probe_interpreter).
#pragma once
#include <string>
#include <vector>

#include "kernelspec/jupyter.hpp"

namespace ik {

// Under /usr, /bin, /sbin, /lib*, /etc: already in every sandbox.
bool is_system_path(const std::string& path);
// argv[0] names a Python interpreter (python, python3, python3.11...).
bool looks_like_python(const std::string& argv0);
// Directories an interpreter needs beyond the system ones, top-most only.
std::vector<std::string> needed_directories(const InterpreterInfo& info);
// A program that is not Python: the directory above its bin/ when it lies
// outside the system directories (/opt/julia/bin/julia -> /opt/julia).
std::vector<std::string> program_directories(const std::string& argv0);

}  // namespace ik
