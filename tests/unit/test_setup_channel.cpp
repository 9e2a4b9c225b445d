// The child -> parent descriptor hand-over (send_fd / receive_fd) that gives
// the launcher the sandbox's root, over a real unix socket pair.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "apply/setup_channel.hpp"

namespace {

struct Pair {
  ik::UniqueFd a, b;
  Pair() {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    a.reset(sv[0]);
    b.reset(sv[1]);
  }
};

bool same_file(int x, int y) {
  struct stat sx {
  }, sy{};
  REQUIRE(fstat(x, &sx) == 0);
  REQUIRE(fstat(y, &sy) == 0);
  return sx.st_dev == sy.st_dev && sx.st_ino == sy.st_ino;
}

}  // namespace

TEST_CASE("report: a directory fd crosses the socket and arrives close-on-exec") {
  Pair p;
  ik::UniqueFd dir(open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(dir.valid());
  REQUIRE(ik::send_fd(p.b.get(), dir.get()).ok());
  auto got = ik::receive_fd(p.a.get());
  REQUIRE(got.ok());
  CHECK(got->get() != dir.get());
  CHECK(same_file(got->get(), dir.get()));
  CHECK((fcntl(got->get(), F_GETFD) & FD_CLOEXEC) != 0);
  // Usable as a path prefix, the way the launcher reaches the kernel's sockets.
  std::string path = "/proc/self/fd/" + std::to_string(got->get()) + "/proc/self";
  CHECK(access(path.c_str(), F_OK) == 0);
}

TEST_CASE("report: receive_fd fails cleanly when the sender closed without sending") {
  Pair p;
  p.b.reset();
  auto got = ik::receive_fd(p.a.get());
  REQUIRE_FALSE(got.ok());
  CHECK(got.error().err == EPIPE);
}

TEST_CASE("report: a message without a descriptor, or with two, is refused") {
  Pair p;
  SUBCASE("no descriptor") {
    REQUIRE(write(p.b.get(), "r", 1) == 1);
    auto got = ik::receive_fd(p.a.get());
    REQUIRE_FALSE(got.ok());
    CHECK(got.error().err == EPROTO);
  }
  SUBCASE("two descriptors") {
    int fds[2] = {0, 1};
    REQUIRE(ik::send_fds(p.b.get(), fds, 2).ok());
    auto got = ik::receive_fd(p.a.get());
    REQUIRE_FALSE(got.ok());
    CHECK(got.error().err == EPROTO);
  }
}
