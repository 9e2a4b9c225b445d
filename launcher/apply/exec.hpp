// The last step in the sandbox: find the program on the sandbox's PATH and
// execve it. Not-found and not-executable get distinct statuses (127, 126).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace ik {

// Only returns on failure.
Error exec_program(const std::vector<std::string>& argv, const std::vector<std::string>& env);

// Host side: for a program not found inside, suggest what to mount.
std::string not_found_hint(const std::string& program, const std::string& host_path_var);
// Adds that hint to a "not found inside the sandbox" error (others unchanged).
Error with_not_found_hint(Error e, const std::map<std::string, std::string>& host_env);

}  // namespace ik
