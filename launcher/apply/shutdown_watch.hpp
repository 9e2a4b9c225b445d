// Ends a kernel that has answered shutdown_request but then sits idle
// instead of exiting.
//
// Why: ipykernel 6.17 (Debian 12) can deadlock for its 10 s flush timeout
// on the way out. After the shutdown_request handler, its control thread
// flushes stdout/stderr through the IOPub thread and waits for that flush,
// while the main thread (woken by the same handler) is already running the
// atexit handlers, which stop the IOPub thread and then join the control
// thread. If the IOPub thread stops before it has run the flush, both
// threads sleep until the flush times out (10 s), and jupyter_client, which
// waits shutdown_wait_time / 2 (2.5 s by default), SIGTERMs the kernel.
// A plain kernel has the same race; a tmpfs HOME (the sandbox's) makes the
// main thread's way to that atexit handler faster (IPython's history
// database needs no fsync), so the race is lost more often (bench/soak.md).
//
// The launcher sees the shutdown_reply pass through the relay. From then
// on a kernel has nothing left but to exit, and exiting is CPU work
// (finalizing the interpreter): a kernel whose CPU time stands still for
// kIdleLimit after its reply is in that deadlock (or another one), and the
// sandbox is killed. Its exit status is then reported as 0, the status the
// deadlocked kernel would have exited with once the flush timed out.
//
// The same race has a second outcome: when the control thread is not
// waiting for a flush but sending its last "idle" status on the IOPub
// socket itself (the IOPub thread is already joined) while the main thread
// closes that socket, libzmq's socket is used by two threads at once, and
// the kernel aborts ("Bad file descriptor (src/signaler.cpp)", "Assertion
// failed: pfd.revents & POLLIN", status 134) or segfaults (139), or sees
// ENOTSOCK (a harmless traceback; ipykernel PR 1518). A plain kernel does
// the same. The shutdown the client asked for was complete (the reply was
// sent; the user's atexit handlers run before ipykernel's close()), so the
// launcher reports 0 for such an end too and says on stderr what happened
// (bench/soak.md: "The abort at shutdown").
//
// The reply may also die with the kernel unsent: ipykernel hands it to
// libzmq, whose I/O thread writes it to the socket later, and an abort in
// the teardown before that thread ran (a loaded machine) takes it along.
// So an abort or segfault after a client's shutdown_request (signed with
// the connection file's key, so no other local user can make a crash
// count) counts as that shutdown too, with its own note.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "apply/event_source.hpp"
#include "apply/sandbox.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"

namespace ik {

class ShutdownWatch : public EventSource {
 public:
  static constexpr auto kTick = std::chrono::milliseconds(100);
  static constexpr int kIdleLimitTicks = 5;  // 0.5 s without CPU time after the reply

  static Result<ShutdownWatch> create();
  int fd() const { return timer_.get(); }
  // The kernel sent its shutdown_reply: start sampling its CPU time.
  void arm(pid_t program);
  // Handles the timer fd: kills the sandbox once the kernel idles too long.
  void on_ready(const SandboxProcess& sandbox);
  bool ended_kernel() const { return ended_; }
  // The kernel's shutdown_reply has passed through the relay.
  bool reply_seen() const { return reply_seen_; }
  // The status to exit with for a sandbox that ended with STATUS (128+N for
  // signal N), REQUESTED if a client's shutdown_request went to the kernel;
  // notes on stderr when it is not STATUS.
  int reported_status(int status, bool requested = false) const;
  // As an event source: the timer fd.
  std::vector<int> fds() const override { return {fd()}; }
  bool on_ready(int fd, const SandboxProcess& sandbox) override;

 private:
  UniqueFd timer_;
  UniqueFd program_fd_;  // pidfd: the kernel's pid is not reused under us
  pid_t program_ = -1;
  std::optional<std::uint64_t> last_cpu_;
  int idle_ticks_ = 0;
  bool ended_ = false;
  bool reply_seen_ = false;
};

// Pure: the launcher's exit status for a sandbox that ended with STATUS.
// After the kernel's shutdown_reply, a kill by the watch and an abort or
// segfault in the kernel's own teardown (ipykernel's IOPub/control thread
// race) count as the completed shutdown they follow: 0. So do such an abort
// or segfault after a shutdown_request whose reply did not get out
// (REQUESTED). Otherwise STATUS.
int status_after_shutdown(bool reply_seen, bool ended_by_watch, int status, bool requested = false);

// utime + stime of PID (all its threads, in clock ticks) from /proc/PID/stat;
// nothing if it is gone or a zombie.
std::optional<std::uint64_t> process_cpu_ticks(pid_t pid);

}  // namespace ik
