// The pool's message framing (pool/proto): descriptors passed with
// SCM_RIGHTS over a real SOCK_SEQPACKET pair.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "pool/proto.hpp"

namespace {

struct Pair {
  ik::UniqueFd a, b;
  Pair() {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    a = ik::UniqueFd(sv[0]);
    b = ik::UniqueFd(sv[1]);
  }
};

}  // namespace

TEST_CASE("pool proto: up to 8 descriptors arrive, close-on-exec, in order") {
  Pair p;
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i) fds.push_back(STDERR_FILENO);
  REQUIRE(ik::pool::send_message(p.a.get(), {{"op", "x"}}, fds));
  auto m = ik::pool::recv_message(p.b.get());
  REQUIRE(m);
  CHECK(m->body["op"] == "x");
  REQUIRE(m->fds.size() == 8);
  for (const auto& fd : m->fds) CHECK((fcntl(fd.get(), F_GETFD) & FD_CLOEXEC) != 0);
}

TEST_CASE("pool proto: more descriptors than a message carries is an error, not a stack overflow") {
  // The control buffer holds 8; a 9th used to be copied past its end.
  Pair p;
  std::vector<int> fds(9, STDERR_FILENO);
  auto s = ik::pool::send_message(p.a.get(), {{"op", "x"}}, fds);
  REQUIRE_FALSE(s);
  CHECK(s.error().describe().find("9 descriptors") != std::string::npos);
}

TEST_CASE("pool proto: the receive buffer is the message's size: small, large and too large messages") {
  // recv_message sizes its buffer from a MSG_PEEK | MSG_TRUNC look at the
  // queued message; each message must still arrive whole and in order.
  Pair p;
  const std::string big(200 * 1024, 'k');  // a pool key with a long environment, say
  REQUIRE(ik::pool::send_message(p.a.get(), {{"op", "small"}}, {}));
  REQUIRE(ik::pool::send_message(p.a.get(), {{"op", "big"}, {"key", big}}, {STDERR_FILENO}));
  auto small = ik::pool::recv_message(p.b.get());
  REQUIRE(small);
  CHECK(small->body["op"] == "small");
  CHECK(small->fds.empty());
  auto large = ik::pool::recv_message(p.b.get());
  REQUIRE(large);
  CHECK(large->body["key"] == big);
  CHECK(large->fds.size() == 1);
  // Over the 256 KiB limit: an error (the descriptor closed), not a cut message parsed.
  const std::string huge(300 * 1024, 'h');
  int sndbuf = 1024 * 1024;
  setsockopt(p.a.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  REQUIRE(ik::pool::send_message(p.a.get(), {{"key", huge}}, {STDERR_FILENO}));
  auto too_large = ik::pool::recv_message(p.b.get());
  REQUIRE_FALSE(too_large);
  CHECK(too_large.error().describe().find("too large") != std::string::npos);
  // A hang-up is "connection closed", as before.
  p.a.reset();
  auto closed = ik::pool::recv_message(p.b.get());
  REQUIRE_FALSE(closed);
  CHECK(closed.error().describe().find("connection closed") != std::string::npos);
}
