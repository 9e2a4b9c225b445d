// What the planner may ask about the host's files and users, and nothing
// more: the planner itself never calls lstat/stat/readlink/realpath/getpwnam,
// so it stays pure data in, pure data out. The real answers come from
// host/real_fs.cpp (next to the other host reads); unit tests pass an
// in-memory host (host/memory_fs.hpp).
#pragma once
#include <optional>
#include <string>

namespace ik {

enum class FileType { kDir, kFile, kSymlink, kOther };

class HostFs {
 public:
  virtual ~HostFs() = default;
  // lstat(2): the type of `path` itself (a symlink is kSymlink). nullopt
  // when it cannot be looked up; `err` (if given) gets the errno.
  virtual std::optional<FileType> lstat_type(const std::string& path, int* err = nullptr) const = 0;
  // stat(2): the type after following symlinks.
  virtual std::optional<FileType> stat_type(const std::string& path, int* err = nullptr) const = 0;
  // readlink(2): the target as written; nullopt unless `path` is a symlink.
  virtual std::optional<std::string> read_link(const std::string& path) const = 0;
  // realpath(3): 0 and `out`, or the errno.
  virtual int real_path(const std::string& path, std::string& out) const = 0;
  // The home directory of a user name (getpwnam(3)); nullopt for no such user.
  virtual std::optional<std::string> user_home(const std::string& name) const = 0;
};

}  // namespace ik
