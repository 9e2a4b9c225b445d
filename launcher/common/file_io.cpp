#include "common/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fd.hpp"

namespace ik {

Result<std::string> read_small_file(const std::string& path, size_t max_bytes) {
  // The messages are built only on the way out: this runs several times at
  // every start.
  auto fail = [&](int err, std::string what) { return Error{"read " + path, err, std::move(what), {}, kExitSetup}; };
  auto too_large = [&] {
    return fail(0, "larger than " + (max_bytes % (1 << 20) == 0 ? std::to_string(max_bytes >> 20) + " MiB"
                                                                : std::to_string(max_bytes) + " bytes"));
  };
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) return fail(errno, {});
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail(errno, {});
  if (!S_ISREG(st.st_mode)) return fail(0, "not a regular file");
  if (st.st_size > static_cast<off_t>(max_bytes)) return too_large();
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(errno, {});
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    // procfs files report size 0: cap what is read too.
    if (text.size() > max_bytes) return too_large();
  }
  return text;
}

std::string read_small_file_or_empty(const std::string& path, bool* ok, size_t max_bytes) {
  auto text = read_small_file(path, max_bytes);
  if (ok) *ok = text.ok();
  return text.ok() ? std::move(*text) : std::string();
}

int write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return 0;
}

int write_file(const std::string& path, const std::string& content) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return errno;
  ssize_t n = ::write(fd.get(), content.data(), content.size());
  if (n < 0) return errno;
  return n == static_cast<ssize_t>(content.size()) ? 0 : EIO;
}

std::string read_sysctl(const std::string& name) {
  std::string v = read_small_file_or_empty("/proc/sys/" + name);
  return v.substr(0, v.find('\n'));
}

}  // namespace ik
