#include "pool/lock.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

#include "common/fd.hpp"

namespace ik::pool {

bool daemon_holds_lock(const std::string& dir) {
  UniqueFd fd(open(lock_path(dir).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;  // never started here
  // A shared lock conflicts with the daemon's exclusive one only. When we
  // get it, it is ours until the descriptor closes just below: a `pool start`
  // in that instant would say "already runs" (a window of microseconds).
  return flock(fd.get(), LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
}

}  // namespace ik::pool
