// Path helpers for the planner: ~ expansion, making paths absolute against
// the logical cwd, lexical normalisation and host realpath.
#pragma once
#include <string>

#include "common/error.hpp"

namespace ik {

// "~" and "~/x" use `home`; "~user/x" looks the user up in passwd.
Result<std::string> expand_tilde(const std::string& path, const std::string& home);
// Lexically normalises: collapses "//", "." and ".." (no symlink lookups).
std::string normalize_path(const std::string& path);
// Absolute (against `cwd` when relative) and normalised.
std::string absolute_path(const std::string& path, const std::string& cwd);
// realpath(3) on the host; errors name the path and the entry it came from.
Result<std::string> host_realpath(const std::string& path, const std::string& entry);
// Number of components: "/" -> 0, "/a/b" -> 2.
size_t path_depth(const std::string& path);
// True when `path` equals `dir` or lies below it.
bool path_is_within(const std::string& path, const std::string& dir);

}  // namespace ik
