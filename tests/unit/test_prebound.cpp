// relay/prebound.hpp: the host ports a pooled kernelspec's launcher binds
// first thing and hands to the pool helper's relay.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay/prebound.hpp"

using namespace ik;
using namespace ik::relay;

namespace {

// A free tcp port on 127.0.0.1 (bound and released again).
int free_port() {
  UniqueFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0);
  return ntohs(a.sin_port);
}

ConnectionInfo tcp_info() {
  ConnectionInfo c;
  c.transport = "tcp";
  c.ip = "127.0.0.1";
  c.shell_port = free_port();
  c.iopub_port = free_port();
  c.stdin_port = free_port();
  c.control_port = free_port();
  c.hb_port = free_port();
  return c;
}

std::vector<UniqueFd> dup_all(const std::vector<int>& fds) {
  std::vector<UniqueFd> out;
  for (int fd : fds) out.emplace_back(fcntl(fd, F_DUPFD_CLOEXEC, 0));
  return out;
}

}  // namespace

TEST_CASE("prebound: binds the five tcp ports, and a client connection waits in the backlog") {
  const ConnectionInfo c = tcp_info();
  auto pre = PreboundListeners::bind(c);
  REQUIRE(pre);
  REQUIRE(pre->fds().size() == kChannelCount);
  CHECK(pre->count() == kChannelCount);
  UniqueFd client(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(c.shell_port));
  CHECK(connect(client.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);  // not refused
  auto shell = pre->take(Channel::kShell);
  REQUIRE(shell);
  CHECK(shell->accept().valid());
  CHECK_FALSE(pre->take(Channel::kShell));  // once
  CHECK(pre->fds().empty());                // no longer all five
}

TEST_CASE("prebound: ipc is never bound early (its socket file would go with the first owner)") {
  ConnectionInfo c = tcp_info();
  c.transport = "ipc";
  c.ip = "/tmp/ik-prebound-test";
  CHECK_FALSE(PreboundListeners::bind(c));
}

TEST_CASE("prebound: adopt keeps listeners of the right ports and drops the others") {
  const ConnectionInfo c = tcp_info();
  auto pre = PreboundListeners::bind(c);
  REQUIRE(pre);
  auto fds = dup_all(pre->fds());
  std::swap(fds[0], fds[1]);  // shell's slot gets iopub's listener and the other way round
  UniqueFd not_listening(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  fds[4] = std::move(not_listening);
  auto adopted = PreboundListeners::adopt(c, std::move(fds));
  REQUIRE(adopted);
  CHECK_FALSE(adopted->take(Channel::kShell));
  CHECK_FALSE(adopted->take(Channel::kIopub));
  CHECK_FALSE(adopted->take(Channel::kHb));
  auto stdin_l = adopted->take(Channel::kStdin);
  REQUIRE(stdin_l);
  CHECK(stdin_l->address() == c.endpoint(c.stdin_port));
  CHECK(adopted->count() == 1);
  CHECK(adopted->take(Channel::kControl));
  CHECK(adopted->count() == 0);
  CHECK_FALSE(PreboundListeners::adopt(c, dup_all({pre->fds()[0]})));  // not five
}
