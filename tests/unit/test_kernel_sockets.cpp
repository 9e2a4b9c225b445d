// relay/kernel_sockets.hpp: the kernel's ipc socket files, dialled through
// a directory fd, waited for with inotify only while something waits.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "relay/kernel_sockets.hpp"

using namespace ik;
using namespace ik::relay;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/ik-ksock-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

// A listening unix socket at dir/name.
UniqueFd listen_at(const std::string& dir, const std::string& name) {
  UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const std::string p = dir + "/" + name;
  REQUIRE(p.size() < sizeof a.sun_path);
  p.copy(a.sun_path, p.size());
  REQUIRE(bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(listen(s.get(), 4) == 0);
  return s;
}

bool readable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1;
}

// The number of watches of an inotify instance ("inotify wd:" lines of its fdinfo).
int watches(int fd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
  int n = 0;
  for (std::string line; std::getline(in, line);) n += line.rfind("inotify wd:", 0) == 0;
  return n;
}

}  // namespace

TEST_CASE("kernel sockets: a socket file that appears wakes the watch and is dialled") {
  TempDir d;
  UniqueFd dir(open(d.path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  auto k = KernelSockets::open(dir.get(), "kernel");
  REQUIRE(k);
  CHECK(k->dial(0).dial == KernelSockets::Dial::kAbsent);
  CHECK_FALSE(readable(k->watch_fd(), 0));
  auto l = listen_at(d.path, "kernel-0");
  CHECK(readable(k->watch_fd(), 1000));
  k->drain_watch();
  CHECK(k->dial(0).dial == KernelSockets::Dial::kConnected);
}

TEST_CASE("kernel sockets: unwatched, a missing file turns the watch on again and nothing is missed") {
  TempDir d;
  UniqueFd dir(open(d.path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  auto k = KernelSockets::open(dir.get(), "kernel");
  REQUIRE(k);
  auto l0 = listen_at(d.path, "kernel-0");
  CHECK(k->dial(0).dial == KernelSockets::Dial::kConnected);
  k->unwatch();
  k->drain_watch();  // the watch's creation event and IN_IGNORED
  // Unwatched: a new file raises nothing.
  auto l1 = listen_at(d.path, "kernel-1");
  CHECK_FALSE(readable(k->watch_fd(), 50));
  // A file there already is dialled without the watch; a missing one turns it on.
  CHECK(k->dial(1).dial == KernelSockets::Dial::kConnected);
  CHECK(k->dial(2).dial == KernelSockets::Dial::kAbsent);
  auto l2 = listen_at(d.path, "kernel-2");
  CHECK(readable(k->watch_fd(), 1000));
  k->drain_watch();
  CHECK(k->dial(2).dial == KernelSockets::Dial::kConnected);
}

TEST_CASE("kernel sockets: unwatch() leaves the inotify instance without a watch") {
  // What makes the close at exit quick: an instance with a watch waits in
  // close() for the kernel's fsnotify mark reaper (7-16 ms here), one whose
  // watch went earlier does not. /proc/self/fdinfo lists the live watches.
  TempDir d;
  UniqueFd dir(open(d.path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  auto k = KernelSockets::open(dir.get(), "kernel");
  REQUIRE(k);
  CHECK(watches(k->watch_fd()) == 1);
  k->unwatch();
  CHECK(watches(k->watch_fd()) == 0);
  k->unwatch();  // twice is harmless
  CHECK(watches(k->watch_fd()) == 0);
  CHECK(k->dial(0).dial == KernelSockets::Dial::kAbsent);
  CHECK(watches(k->watch_fd()) == 1);
}
