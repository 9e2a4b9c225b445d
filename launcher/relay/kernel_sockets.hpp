// The kernel's ipc sockets inside the sandbox, reached without trusting
// anything the kernel controls: the kernel owns the directory they live in
// and may replace a socket file by a symlink or by anything else.
#pragma once
#include <string>

#include "common/error.hpp"
#include "common/fd.hpp"

namespace ik::relay {

// Opens `rel_dir` below `root_fd` (an O_PATH fd of the sandbox's root) as an
// O_PATH directory fd; symlinks in the path resolve inside that root and
// magic links (/proc/PID/...) are refused.
Result<UniqueFd> open_sandbox_dir(int root_fd, const std::string& rel_dir);

class KernelSockets {
 public:
  enum class Dial {
    kConnected,     // fd is a connected unix stream socket
    kAbsent,        // no such file yet: wait for the directory to change
    kNotListening,  // the file is there but nobody listens (yet): retry soon
    kRejected,      // not a plain socket file in the directory: never follow
  };
  struct Outcome {
    Dial dial;
    UniqueFd fd;
    std::string why;  // for kRejected
  };

  // dir_fd: the directory holding "<prefix>-N" (dup'ed, caller keeps its
  // own). Watches it with inotify so waiting costs nothing.
  static Result<KernelSockets> open(int dir_fd, std::string prefix);

  // Non-blocking connect to "<prefix>-<n>". kAbsent with the watch off
  // (unwatch()) turns it on again first, then looks once more, so a file
  // created in between is not missed.
  Outcome dial(int n);
  // Readable when a file in the directory was created, moved in or changed
  // (while watched).
  int watch_fd() const { return inotify_.get(); }
  // Stops watching while nothing waits for a socket file. Why: closing an
  // inotify instance that still has a watch waits for the kernel's mark
  // reaper (an SRCU grace period after a one-jiffy delay, 7-16 ms here), and
  // that close is on the way out of every launcher and pool helper: the
  // time between a kernel's exit and the exit jupyter_client waits for. A
  // watch removed earlier is reaped in the background meanwhile.
  void unwatch();
  // Empties the inotify queue (after watch_fd() was readable).
  void drain_watch() const;
  std::string name(int n) const { return prefix_ + "-" + std::to_string(n); }

 private:
  Status watch();

  UniqueFd dir_;
  UniqueFd inotify_;
  int wd_ = -1;  // the directory's watch, -1 while unwatched
  std::string prefix_;
};

}  // namespace ik::relay
