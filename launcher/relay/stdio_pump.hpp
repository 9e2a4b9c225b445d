// Copies the sandboxed program's stdout/stderr pipes (apply/stdio.hpp) to
// our own stdout/stderr, inside the event loop that already runs (the
// relay's, or the monitor's for `isolate --stdio=pipe`).
//
// Bounded: one fixed buffer per stream. When a destination does not take
// more (a full pipe, a terminal nobody reads), the pump stops reading that
// stream, so the program blocks in write() as it would on the destination
// itself (back-pressure); nothing else in the loop waits. Our stdout/stderr
// descriptions are shared with whoever started us, so they are never made
// non-blocking: pipes and terminals are reopened through /proc/self/fd as a
// new non-blocking description, sockets are written with MSG_DONTWAIT, and
// files are written as they are (a file never waits for a reader). When a
// destination is a terminal, TerminalFilter removes control sequences.
// A destination that fails (the reader went away) makes the pump drop that
// stream's output, counted, and keep reading, so the program never blocks
// on it. After the program exits, finish() copies what is left, bounded in time.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "apply/event_source.hpp"
#include "apply/stdio.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"

namespace ik {

struct StdioCounters {
  uint64_t bytes_in = 0;   // read from the program
  uint64_t bytes_out = 0;  // written to the destination
  uint64_t removed = 0;    // terminal control bytes removed
  uint64_t dropped = 0;    // read but not written: destination failed, or left at exit
  uint64_t stalls = 0;     // times the destination was full and the program had to wait
};

class StdioPump : public EventSource {
 public:
  struct Stream {
    const char* name;  // "stdout", "stderr"
    UniqueFd source;   // non-blocking read end
    int sink;          // our fd it goes to (not owned)
  };
  static constexpr size_t kDefaultBuffer = size_t{64} << 10;
  // stdout -> our fd 1, stderr -> our fd 2. Takes stdio's read ends.
  static Result<std::unique_ptr<StdioPump>> create(ChildStdio& stdio);
  static Result<std::unique_ptr<StdioPump>> create(std::vector<Stream> streams, size_t buffer_bytes = kDefaultBuffer);
  ~StdioPump();
  StdioPump(const StdioPump&) = delete;
  StdioPump& operator=(const StdioPump&) = delete;

  // Readable when there is something to copy (or a destination has room
  // again); level-triggered, so a loop may poll it with its other fds.
  int fd() const;
  // Does a bounded amount of work (about 1 MiB per stream) and returns.
  void on_ready();
  // As an event source (in the relay's or HostEvents' loop): fd().
  std::vector<int> fds() const override { return {fd()}; }
  bool on_ready(int fd, const SandboxProcess&) override {
    if (fd != this->fd()) return false;
    on_ready();
    return true;
  }
  // Every stream at EOF and written out (or dropped).
  bool done() const;
  // After the program exited: copies what is still in the pipes, for at
  // most timeout_ms (a destination that takes nothing cannot hold us).
  void finish(int timeout_ms = 2000);
  StdioCounters counters(size_t stream) const;
  // For -v: one line per stream.
  std::string describe() const;

  class Impl;

 private:
  explicit StdioPump(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ik
