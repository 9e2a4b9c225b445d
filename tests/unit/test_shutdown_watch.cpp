// What the launcher's shutdown watch relies on: the relay spotting the
// kernel's shutdown_reply in a ZMTP stream (any chunking, only in the header
// frame), and reading a process's CPU time.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "apply/shutdown_watch.hpp"
#include "relay/frame_tap.hpp"
#include "relay/jupyter_header.hpp"
#include "relay/zmtp.hpp"
#include "zmtp_wire.hpp"

using ik::relay::header_msg_type_is;
using ik::relay::ZmtpScanner;

namespace {

std::string frame(const std::string& body, bool more) {
  std::string f(1, static_cast<char>((more ? 1 : 0) | (body.size() > 255 ? 2 : 0)));
  if (body.size() > 255) {
    for (int i = 7; i >= 0; --i) f += static_cast<char>((static_cast<uint64_t>(body.size()) >> (8 * i)) & 0xff);
  } else {
    f += static_cast<char>(body.size());
  }
  return f + body;
}

// [routing id] <IDS|MSG> hmac header parent metadata content
std::string jupyter_message(const std::string& header, const std::string& content) {
  return frame("client-id", true) + frame("<IDS|MSG>", true) + frame("0123abcd", true) + frame(header, true) +
         frame("{}", true) + frame("{}", true) + frame(content, false);
}

std::vector<std::string> headers_seen(const std::string& stream, size_t chunk) {
  std::vector<std::string> seen;
  ZmtpScanner s(1 << 20);
  ik::relay::JupyterFrameTap tap(ik::relay::JupyterFrameTap::Part::kHeader,
                                 [&](std::string_view h, bool) { seen.emplace_back(h); });
  s.set_observer(&tap);
  for (size_t i = 0; i < stream.size(); i += chunk) {
    const std::string part = stream.substr(i, chunk);
    REQUIRE(s.feed(reinterpret_cast<const unsigned char*>(part.data()), part.size()) == ZmtpScanner::Verdict::kOk);
  }
  return seen;
}

}  // namespace

TEST_CASE("jupyter header: msg_type matched with either JSON spacing, nothing else") {
  CHECK(header_msg_type_is(R"({"msg_id": "1", "msg_type": "shutdown_reply", "version": "5.3"})", "shutdown_reply"));
  CHECK(header_msg_type_is(R"({"msg_type":"shutdown_reply"})", "shutdown_reply"));
  CHECK(header_msg_type_is("{\"msg_type\" :\n \"shutdown_reply\"}", "shutdown_reply"));
  CHECK_FALSE(header_msg_type_is(R"({"msg_type": "shutdown_replyX"})", "shutdown_reply"));
  CHECK_FALSE(header_msg_type_is(R"({"msg_type": "interrupt_reply", "x": "shutdown_reply"})", "shutdown_reply"));
  CHECK_FALSE(header_msg_type_is(R"({"msg_type": "shutdown_rep)", "shutdown_reply"));  // cut short
  CHECK_FALSE(header_msg_type_is(R"({"msg_type": )", "shutdown_reply"));
  CHECK_FALSE(header_msg_type_is("", "shutdown_reply"));
}

TEST_CASE("zmtp header tap: the header frame of each message, whatever the chunking") {
  const std::string h1 = R"({"msg_id": "a", "msg_type": "interrupt_reply"})";
  const std::string h2 = R"({"msg_id": "b", "msg_type": "shutdown_reply"})";
  // the content of the first message names shutdown_reply too: only headers count
  const std::string stream =
      greeting() + jupyter_message(h1, R"({"msg_type": "shutdown_reply"})") + jupyter_message(h2, "{}");
  for (size_t chunk : {size_t{1}, size_t{7}, size_t{64}, stream.size()}) {
    CAPTURE(chunk);
    const auto seen = headers_seen(stream, chunk);
    REQUIRE(seen.size() == 2);
    CHECK(seen[0] == h1);
    CHECK(seen[1] == h2);
    CHECK_FALSE(header_msg_type_is(seen[0], "shutdown_reply"));
    CHECK(header_msg_type_is(seen[1], "shutdown_reply"));
  }
}

TEST_CASE("zmtp header tap: long headers are cut at kMaxFrame, no delimiter means no header") {
  const std::string big = R"({"msg_type": "shutdown_reply", "pad": ")" + std::string(20000, 'x') + "\"}";
  auto seen = headers_seen(greeting() + jupyter_message(big, "{}"), 512);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].size() == ik::relay::JupyterFrameTap::kMaxFrame);
  CHECK(header_msg_type_is(seen[0], "shutdown_reply"));
  // a message without "<IDS|MSG>" (e.g. a heartbeat) has no header
  seen = headers_seen(greeting() + frame("ping", true) + frame(R"({"msg_type": "shutdown_reply"})", false), 3);
  CHECK(seen.empty());
}

TEST_CASE("process_cpu_ticks: grows for a busy child, nothing once it is a zombie") {
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    volatile uint64_t x = 0;
    while (std::chrono::steady_clock::now() < end) x = x + 1;
    _exit(0);
  }
  const auto first = ik::process_cpu_ticks(child);
  REQUIRE(first.has_value());
  // Ticks are 10 ms of CPU; on a loaded machine the child may need a while.
  auto later = first;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (later && *later == *first && std::chrono::steady_clock::now() < deadline) {
    usleep(10'000);
    later = ik::process_cpu_ticks(child);
  }
  if (later) CHECK(*later > *first);  // else it already exited: covered below
  siginfo_t info{};
  REQUIRE(waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT) == 0);  // a zombie now
  CHECK_FALSE(ik::process_cpu_ticks(child).has_value());
  int status = 0;
  waitpid(child, &status, 0);
  CHECK_FALSE(ik::process_cpu_ticks(child).has_value());
}

TEST_CASE(
    "status_after_shutdown: after the kernel's reply, the watch's kill and a teardown abort count as the shutdown") {
  using ik::status_after_shutdown;
  // no shutdown_reply seen: every status is the kernel's own
  for (int st : {0, 1, 128 + SIGABRT, 128 + SIGSEGV, 128 + SIGKILL, 128 + SIGTERM})
    CHECK(status_after_shutdown(false, false, st) == st);
  // reply seen: ipykernel's IOPub/control thread race ends in SIGABRT or SIGSEGV
  CHECK(status_after_shutdown(true, false, 128 + SIGABRT) == 0);
  CHECK(status_after_shutdown(true, false, 128 + SIGSEGV) == 0);
  CHECK(status_after_shutdown(true, false, 0) == 0);
  // killed by the watch (deadlock) vs. killed by someone else
  CHECK(status_after_shutdown(true, true, 128 + SIGKILL) == 0);
  CHECK(status_after_shutdown(true, false, 128 + SIGKILL) == 128 + SIGKILL);
  // other ends after the reply stay what they are
  CHECK(status_after_shutdown(true, false, 3) == 3);
  CHECK(status_after_shutdown(true, false, 128 + SIGTERM) == 128 + SIGTERM);
  CHECK(status_after_shutdown(true, false, 128 + SIGXCPU) == 128 + SIGXCPU);
}

TEST_CASE("status_after_shutdown: after a shutdown_request whose reply never got out, only a teardown crash counts") {
  using ik::status_after_shutdown;
  // the reply died in the kernel's libzmq queue with it: the abort still ends the asked-for shutdown
  CHECK(status_after_shutdown(false, false, 128 + SIGABRT, true) == 0);
  CHECK(status_after_shutdown(false, false, 128 + SIGSEGV, true) == 0);
  // anything else is the kernel's own status (no reply: the watch never ran)
  for (int st : {0, 1, 3, 128 + SIGKILL, 128 + SIGTERM, 128 + SIGXCPU})
    CHECK(status_after_shutdown(false, false, st, true) == st);
}
