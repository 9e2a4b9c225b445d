#include "host/real_fs.hpp"

#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

namespace ik {
namespace {

FileType type_of(mode_t mode) {
  if (S_ISDIR(mode)) return FileType::kDir;
  if (S_ISREG(mode)) return FileType::kFile;
  if (S_ISLNK(mode)) return FileType::kSymlink;
  return FileType::kOther;
}

class RealFs final : public HostFs {
 public:
  std::optional<FileType> lstat_type(const std::string& path, int* err) const override {
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0) return type_of(st.st_mode);
    if (err) *err = errno;
    return std::nullopt;
  }
  std::optional<FileType> stat_type(const std::string& path, int* err) const override {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) return type_of(st.st_mode);
    if (err) *err = errno;
    return std::nullopt;
  }
  std::optional<std::string> read_link(const std::string& path) const override {
    char target[PATH_MAX];
    ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
    if (n <= 0) return std::nullopt;
    return std::string(target, static_cast<size_t>(n));
  }
  int real_path(const std::string& path, std::string& out) const override {
    char buf[PATH_MAX];
    if (!::realpath(path.c_str(), buf)) return errno;
    out = buf;
    return 0;
  }
  std::optional<std::string> user_home(const std::string& name) const override {
    const passwd* pw = getpwnam(name.c_str());
    if (!pw) return std::nullopt;
    return std::string(pw->pw_dir);
  }
};

}  // namespace

std::shared_ptr<const HostFs> real_host_fs() {
  static const std::shared_ptr<const HostFs> fs = std::make_shared<RealFs>();
  return fs;
}

}  // namespace ik
