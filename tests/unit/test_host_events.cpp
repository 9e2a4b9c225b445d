// HostEvents, the one poll loop of the host side without a relay: event
// sources are served while the sandbox runs, and the loop ends with the
// sandbox's exit status. The "sandbox" is a real child process watched
// through its pidfd, as the monitor watches a sandbox's init.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "apply/host_events.hpp"

namespace {

struct Pipe {
  Pipe() {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    read_end.reset(p[0]);
    write_end.reset(p[1]);
  }
  ik::UniqueFd read_end, write_end;
};

// Reads what the child writes; once it has read `expect`, releases the child
// (closes the pipe the child waits on) and drops its own fd.
class ReleasingSource : public ik::EventSource {
 public:
  ReleasingSource(ik::UniqueFd in, ik::UniqueFd release, std::string expect)
      : in_(std::move(in)), release_(std::move(release)), expect_(std::move(expect)) {}
  std::vector<int> fds() const override { return in_.valid() ? std::vector<int>{in_.get()} : std::vector<int>{}; }
  bool on_ready(int fd, const ik::SandboxProcess&) override {
    if (!in_.valid() || fd != in_.get()) return false;
    char buf[64];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) got += std::string(buf, static_cast<size_t>(n));
    if (got == expect_ || n <= 0) {
      release_.reset();
      in_.reset();
    }
    ++calls;
    return true;
  }
  std::string got;
  int calls = 0;

 private:
  ik::UniqueFd in_, release_;
  std::string expect_;
};

}  // namespace

TEST_CASE("host events: a source is served while the sandbox runs, then the loop returns its exit status") {
  Pipe out, release;
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The child: says hello, waits until the source has read it, exits 7
    // (or dies of SIGALRM, 142, if the loop never serves the source).
    ::alarm(10);
    if (::write(out.write_end.get(), "hello", 5) != 5) _exit(1);
    char c;
    release.write_end.reset();
    while (::read(release.read_end.get(), &c, 1) > 0) {
    }
    _exit(7);
  }
  out.write_end.reset();
  release.read_end.reset();
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  REQUIRE(pidfd >= 0);
  ik::SandboxProcess sandbox(pid, ik::UniqueFd(pidfd));
  auto monitor = ik::Monitor::create(sandbox, std::nullopt);
  REQUIRE(monitor);
  ReleasingSource source(std::move(out.read_end), std::move(release.write_end), "hello");
  ik::HostEvents events(*monitor, sandbox);
  events.add(source);
  // The monitor's fds first, then the source's.
  const std::vector<int> fds = events.fds();
  REQUIRE(fds.size() == monitor->fds().size() + 1);
  CHECK(fds.front() == sandbox.pidfd());
  // The child exits only after the source released it: the loop served it.
  CHECK(events.poll_until_exit() == 7);
  CHECK(source.got == "hello");
  CHECK(source.calls >= 1);
  CHECK(monitor->exit_status() == 7);
}

TEST_CASE("host events: an fd that is nobody's is left to the monitor, which keeps the loop going") {
  Pipe idle;
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(0);
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  REQUIRE(pidfd >= 0);
  ik::SandboxProcess sandbox(pid, ik::UniqueFd(pidfd));
  auto monitor = ik::Monitor::create(sandbox, std::nullopt);
  REQUIRE(monitor);
  ReleasingSource source(std::move(idle.read_end), ik::UniqueFd(), "x");
  ik::HostEvents events(*monitor, sandbox);
  events.add(source);
  CHECK(events.on_ready(idle.write_end.get()));  // not the source's, not the monitor's
  CHECK(source.calls == 0);
  CHECK_FALSE(events.on_ready(sandbox.pidfd()));  // the sandbox has exited
  CHECK(monitor->exit_status() == 0);
}
