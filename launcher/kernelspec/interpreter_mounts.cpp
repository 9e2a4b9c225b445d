#include "kernelspec/interpreter_mounts.hpp"

#include <algorithm>
#include <filesystem>

#include "common/paths.hpp"

namespace ik {
namespace fs = std::filesystem;

bool is_system_path(const std::string& p) {
  for (const char* d : {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"})
    if (path_is_within(p, d)) return true;
  return false;
}

bool looks_like_python(const std::string& argv0) {
  std::string base = argv0.substr(argv0.rfind('/') + 1);
  return base.rfind("python", 0) == 0;
}

std::vector<std::string> needed_directories(const InterpreterInfo& info) {
  std::vector<std::string> dirs;
  auto add = [&](const std::string& p) {
    if (p.empty() || p[0] != '/' || is_system_path(p)) return;
    dirs.push_back(normalize_path(p));
  };
  add(info.prefix);
  add(info.base_prefix);
  for (const auto& p : info.paths) add(p);
  add(fs::path(info.executable).parent_path().string());
  // Shortest first, so a directory is seen after every one that can hold
  // it. Sorted as strings, "/a/b" could come after "/a-x" and be compared
  // with it instead of with "/a" ('-' < '/'), and get a bind of its own.
  std::sort(dirs.begin(), dirs.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  });
  std::vector<std::string> top;
  for (const auto& d : dirs)
    if (std::none_of(top.begin(), top.end(), [&](const std::string& t) { return path_is_within(d, t); }))
      top.push_back(d);
  std::sort(top.begin(), top.end());
  return top;
}

std::vector<std::string> program_directories(const std::string& argv0) {
  if (argv0.empty() || argv0[0] != '/' || is_system_path(argv0)) return {};
  return {fs::path(argv0).parent_path().parent_path().string()};
}

}  // namespace ik
