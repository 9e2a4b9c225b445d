#include "relay/kernel_sockets.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace ik::relay {
namespace {

// glibc 2.36 has no openat2() wrapper.
int openat2_fd(int dirfd, const char* path, uint64_t flags, uint64_t resolve) {
  open_how how{};
  how.flags = flags;
  how.resolve = resolve;
  return static_cast<int>(::syscall(SYS_openat2, dirfd, path, &how, sizeof how));
}

}  // namespace

Result<UniqueFd> open_sandbox_dir(int root_fd, const std::string& rel_dir) {
  // RESOLVE_IN_ROOT: ".." and absolute symlinks stay inside the sandbox's
  // root, as they would for the kernel itself; no magic links at all.
  UniqueFd fd(openat2_fd(root_fd, rel_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC,
                         RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS));
  if (!fd.valid()) return sys_error("relay: open the sandbox's " + rel_dir);
  return fd;
}

Result<KernelSockets> KernelSockets::open(int dir_fd, std::string prefix) {
  KernelSockets k;
  k.prefix_ = std::move(prefix);
  k.dir_ = UniqueFd(::fcntl(dir_fd, F_DUPFD_CLOEXEC, 3));
  if (!k.dir_.valid()) return sys_error("relay: dup the kernel socket directory fd");
  k.inotify_ = UniqueFd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!k.inotify_.valid()) return sys_error("relay: inotify_init1", errno, "raise fs.inotify.max_user_instances");
  IK_TRY(k.watch());
  return k;
}

Status KernelSockets::watch() {
  if (wd_ >= 0) return ok();
  // inotify has no *at() form; the magic link of our own fd names the very
  // directory we opened, whatever the kernel later does to its path.
  const std::string self = "/proc/self/fd/" + std::to_string(dir_.get());
  // IN_CREATE for bind(); IN_ATTRIB/IN_MOVED_TO for files put in place
  // atomically or chmod'ed after bind.
  wd_ = ::inotify_add_watch(inotify_.get(), self.c_str(), IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_ONLYDIR);
  if (wd_ < 0) return sys_error("relay: watch the kernel socket directory", errno, "raise fs.inotify.max_user_watches");
  return ok();
}

void KernelSockets::unwatch() {
  if (wd_ < 0) return;
  // Queues the mark for the reaper and returns; the IN_IGNORED event it
  // leaves makes watch_fd() readable once more (drained like any event).
  ::inotify_rm_watch(inotify_.get(), wd_);
  wd_ = -1;
}

KernelSockets::Outcome KernelSockets::dial(int n) {
  const std::string file = name(n);
  // One component below the directory, no symlinks, no mount crossing: a
  // kernel that plants a symlink to a host socket gets nothing followed.
  const auto open_path = [&] {
    return UniqueFd(openat2_fd(dir_.get(), file.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC,
                               RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS));
  };
  UniqueFd path = open_path();
  if (!path.valid() && errno == ENOENT && wd_ < 0) {
    // Watch first, then look again: a file created before the watch is
    // found now, one created after it raises an event.
    if (auto s = watch(); !s) return {Dial::kRejected, {}, s.error().describe()};
    path = open_path();
  }
  if (!path.valid()) {
    if (errno == ENOENT) return {Dial::kAbsent, {}, {}};
    return {Dial::kRejected, {}, file + ": " + std::strerror(errno)};
  }
  struct stat st {};
  if (::fstat(path.get(), &st) != 0) return {Dial::kRejected, {}, file + ": " + std::strerror(errno)};
  if (!S_ISSOCK(st.st_mode)) return {Dial::kRejected, {}, file + " is not a socket"};

  UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return {Dial::kNotListening, {}, std::strerror(errno)};
  // connect() by the inode we just checked, not by a path the kernel could
  // swap between our check and the connect.
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d", path.get());
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
    return {Dial::kConnected, std::move(sock), {}};
  // ECONNREFUSED: bound but not listening yet (or the kernel is gone);
  // EAGAIN: its accept backlog is full. Both: try again shortly.
  return {Dial::kNotListening, {}, std::strerror(errno)};
}

void KernelSockets::drain_watch() const {
  alignas(inotify_event) char buf[4096];
  while (::read(inotify_.get(), buf, sizeof buf) > 0) {
  }
}

}  // namespace ik::relay
