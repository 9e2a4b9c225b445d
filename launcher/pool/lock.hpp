// The pool daemon's lock (DIR/pool.lock, flock LOCK_EX): taken by `pool
// start` before anything else and held by the daemon until it has exited.
// A daemon that stops closes its socket first (claims then start cold at
// once) and ends its waiting sandboxes after: meanwhile the lock is what says
// it still runs (`pool stop` issued twice, or by systemd and by hand).
#pragma once
#include <string>

namespace ik::pool {

inline std::string lock_path(const std::string& dir) { return dir + "/pool.lock"; }

// Whether a daemon (starting, running or stopping) holds DIR's lock.
bool daemon_holds_lock(const std::string& dir);

}  // namespace ik::pool
