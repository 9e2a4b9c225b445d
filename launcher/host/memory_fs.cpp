#include "host/memory_fs.hpp"

#include <cerrno>
#include <deque>

#include "common/paths.hpp"

namespace ik {
namespace {

std::deque<std::string> components(const std::string& path) {
  std::deque<std::string> out;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    if (j > i) out.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

std::string child_of(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

}  // namespace

MemoryFs::MemoryFs() { nodes_["/"] = Node{FileType::kDir, {}}; }

void MemoryFs::add(const std::string& path, Node node) {
  const std::string p = normalize_path(path);
  std::string cur = "/";
  for (const auto& c : components(parent_of(p))) {
    cur = child_of(cur, c);
    nodes_.emplace(cur, Node{FileType::kDir, {}});
  }
  nodes_[p] = std::move(node);
}

std::string MemoryFs::dir(const std::string& path) {
  add(path, Node{FileType::kDir, {}});
  return path;
}

std::string MemoryFs::file(const std::string& path) {
  add(path, Node{FileType::kFile, {}});
  return path;
}

std::string MemoryFs::link(const std::string& path, const std::string& target) {
  add(path, Node{FileType::kSymlink, target});
  return path;
}

MemoryFs MemoryFs::debian() {
  MemoryFs fs;
  for (const char* d : {"/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/usr/share/zoneinfo/Europe", "/tmp",
                        "/etc/ssl/certs", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/fonts", "/etc/ssh",
                        "/etc/sudoers.d", "/etc/python3", "/etc/ssl/private", "/home", "/root"})
    fs.dir(d);
  for (const char* f : {"/usr/share/zoneinfo/Europe/Helsinki",
                        "/etc/ld.so.cache",
                        "/etc/ld.so.conf",
                        "/etc/ssl/openssl.cnf",
                        "/etc/nsswitch.conf",
                        "/etc/host.conf",
                        "/etc/protocols",
                        "/etc/services",
                        "/etc/debian_version",
                        "/etc/bash.bashrc",
                        "/etc/profile",
                        "/etc/timezone",
                        "/etc/shadow",
                        "/etc/gshadow",
                        "/etc/sudoers",
                        "/etc/machine-id",
                        "/etc/resolv.conf",
                        "/etc/passwd",
                        "/etc/group",
                        "/etc/hostname",
                        "/etc/hosts",
                        "/etc/gitconfig",
                        "/etc/login.defs",
                        "/etc/environment",
                        "/usr/lib/os-release"})
    fs.file(f);
  fs.link("/bin", "usr/bin");
  fs.link("/sbin", "usr/sbin");
  fs.link("/lib", "usr/lib");
  fs.link("/lib64", "usr/lib64");
  fs.link("/etc/localtime", "/usr/share/zoneinfo/Europe/Helsinki");  // stays a link
  fs.link("/etc/os-release", "../usr/lib/os-release");               // relative: bound from its real path
  fs.user("root", "/root");
  return fs;
}

int MemoryFs::resolve(const std::string& path, bool follow_last, std::string& out) const {
  if (path.empty()) return ENOENT;
  std::deque<std::string> rest = components(path);
  std::string cur = "/";
  int links = 0;
  while (!rest.empty()) {
    const std::string c = rest.front();
    rest.pop_front();
    if (c == ".") continue;
    if (c == "..") {
      cur = parent_of(cur);
      continue;
    }
    const std::string next = child_of(cur, c);
    auto it = nodes_.find(next);
    if (it == nodes_.end()) return ENOENT;
    if (it->second.type == FileType::kSymlink && (follow_last || !rest.empty())) {
      if (++links > 40) return ELOOP;
      auto target = components(it->second.target);
      rest.insert(rest.begin(), target.begin(), target.end());
      // assign, not = "/": g++ 12 warns falsely (-Wrestrict) about the latter.
      if (!it->second.target.empty() && it->second.target[0] == '/') cur.assign(1, '/');
      continue;
    }
    if (!rest.empty() && it->second.type != FileType::kDir) return ENOTDIR;
    cur = next;
  }
  out = cur;
  return 0;
}

std::optional<FileType> MemoryFs::lstat_type(const std::string& path, int* err) const {
  std::string real;
  if (int e = resolve(path, false, real)) {
    if (err) *err = e;
    return std::nullopt;
  }
  return nodes_.at(real).type;
}

std::optional<FileType> MemoryFs::stat_type(const std::string& path, int* err) const {
  std::string real;
  if (int e = resolve(path, true, real)) {
    if (err) *err = e;
    return std::nullopt;
  }
  return nodes_.at(real).type;
}

std::optional<std::string> MemoryFs::read_link(const std::string& path) const {
  std::string real;
  if (resolve(path, false, real) != 0) return std::nullopt;
  const Node& n = nodes_.at(real);
  if (n.type != FileType::kSymlink) return std::nullopt;
  return n.target;
}

int MemoryFs::real_path(const std::string& path, std::string& out) const { return resolve(path, true, out); }

std::optional<std::string> MemoryFs::user_home(const std::string& name) const {
  auto it = users_.find(name);
  if (it == users_.end()) return std::nullopt;
  return it->second;
}

}  // namespace ik
