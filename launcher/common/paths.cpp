#include "common/paths.hpp"

#include <vector>

namespace ik {

Result<std::string> expand_tilde(const std::string& path, const std::string& home, const HostFs& fs) {
  if (path.empty() || path[0] != '~') return path;
  auto slash = path.find('/');
  std::string name = path.substr(1, slash == std::string::npos ? std::string::npos : slash - 1);
  std::string rest = slash == std::string::npos ? "" : path.substr(slash);
  if (name.empty()) return home + rest;
  auto user_home = fs.user_home(name);
  if (!user_home) return usage_error("'" + path + "': no user named '" + name + "'");
  return *user_home + rest;
}

std::string normalize_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string part = path.substr(i, j - i);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

std::string absolute_path(const std::string& path, const std::string& cwd) {
  if (!path.empty() && path[0] == '/') return normalize_path(path);
  return normalize_path(cwd + "/" + path);
}

size_t path_depth(const std::string& path) {
  size_t n = 0;
  for (size_t i = 0; i < path.size(); ++i)
    if (path[i] == '/' && i + 1 < path.size() && path[i + 1] != '/') ++n;
  return n;
}

bool path_is_within(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/');
}

}  // namespace ik
