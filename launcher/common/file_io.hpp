// Reading and writing whole small files (procfs, sysfs, cgroupfs, connection
// files): the one copy of each, for every layer.
#pragma once
#include <cstddef>
#include <string>

#include "common/error.hpp"

namespace ik {

inline constexpr size_t kSmallFileMax = 1 << 20;

// The whole of a regular file of at most `max_bytes`. Errors: step
// "read PATH" with the errno, or "not a regular file" / "larger than 1 MiB".
// Never takes a terminal (O_NOCTTY).
Result<std::string> read_small_file(const std::string& path, size_t max_bytes = kSmallFileMax);
// The same, empty when it cannot be read; `ok` (if given) tells which.
std::string read_small_file_or_empty(const std::string& path, bool* ok = nullptr, size_t max_bytes = kSmallFileMax);

// Writes all of `data` to `fd` (retrying EINTR and short writes): 0 or the errno.
int write_all(int fd, const char* data, size_t size);
// Writes `content` to the existing file `path` in one write(), as cgroup and
// /proc files want (each write is one command): 0 or the errno, EIO when short.
int write_file(const std::string& path, const std::string& content);

// A /proc/sys value's first line (e.g. "user/max_user_namespaces"); empty if absent.
std::string read_sysctl(const std::string& name);

}  // namespace ik
