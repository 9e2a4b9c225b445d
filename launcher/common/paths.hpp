// Path helpers shared by the planner, the launcher and `isolated-kernel`:
// ~ expansion, making paths absolute against the logical cwd, lexical
// normalisation, depth and ancestry. Only expand_tilde asks the host (for
// ~user), through the HostFs it is given.
#pragma once
#include <string>

#include "common/error.hpp"
#include "common/host_fs.hpp"

namespace ik {

// "~" and "~/x" use `home`; "~user/x" looks the user up (fs.user_home).
Result<std::string> expand_tilde(const std::string& path, const std::string& home, const HostFs& fs);
// Lexically normalises: collapses "//", "." and ".." (no symlink lookups).
std::string normalize_path(const std::string& path);
// Absolute (against `cwd` when relative) and normalised.
std::string absolute_path(const std::string& path, const std::string& cwd);
// Number of components: "/" -> 0, "/a/b" -> 2.
size_t path_depth(const std::string& path);
// True when `path` equals `dir` or lies below it.
bool path_is_within(const std::string& path, const std::string& dir);

}  // namespace ik
