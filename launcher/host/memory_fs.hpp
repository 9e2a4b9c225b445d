// An in-memory HostFs for unit tests: a made-up tree of directories, files
// and symlinks, and a made-up passwd. Resolves paths like the kernel does
// (relative symlink targets against the link's directory, ".." after
// following, ELOOP after 40 links, ENOTDIR through a file).
#pragma once
#include <map>
#include <string>

#include "common/host_fs.hpp"

namespace ik {

class MemoryFs final : public HostFs {
 public:
  MemoryFs();  // just "/"
  // Each adds the missing parent directories too and returns `path`.
  std::string dir(const std::string& path);
  std::string file(const std::string& path);
  std::string link(const std::string& path, const std::string& target);
  void user(const std::string& name, const std::string& home) { users_[name] = home; }
  // A Debian 12 like system: merged /usr (/bin, /sbin, /lib, /lib64 are
  // links into it), /tmp, and an /etc with some curated entries (one a link
  // into /usr, one a link elsewhere), a subdirectory entry, and secrets.
  static MemoryFs debian();

  std::optional<FileType> lstat_type(const std::string& path, int* err = nullptr) const override;
  std::optional<FileType> stat_type(const std::string& path, int* err = nullptr) const override;
  std::optional<std::string> read_link(const std::string& path) const override;
  int real_path(const std::string& path, std::string& out) const override;
  std::optional<std::string> user_home(const std::string& name) const override;

 private:
  struct Node {
    FileType type;
    std::string target;  // kSymlink
  };
  void add(const std::string& path, Node node);
  // Resolves `path`; the last component is followed when `follow_last`.
  int resolve(const std::string& path, bool follow_last, std::string& out) const;
  std::map<std::string, Node> nodes_;
  std::map<std::string, std::string> users_;
};

}  // namespace ik
