// The launcher's exit notice and client watch, pure parts: HMAC signing
// (RFC 4231 vectors), wire frames, the shell tap that finds the running
// cell's signed execute_request, the reason text, and which pid is the client.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apply/client_watch.hpp"
#include "apply/exit_reason.hpp"
#include "relay/exit_notice.hpp"
#include "relay/hmac.hpp"
#include "relay/execute_tap.hpp"
#include "relay/zmtp.hpp"
#include "zmtp_wire.hpp"

using namespace ik::relay;

namespace {

std::string ready_command() {
  const std::string body = std::string("\x05READY") + std::string("\x0bSocket-Type\x00\x00\x00\x03SUB", 19);
  return std::string("\x04", 1) + static_cast<char>(body.size()) + body;
}

void feed(ZmtpScanner& s, const std::string& bytes) {
  s.feed(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

// Decodes complete messages from ZMTP bytes (no greeting): frames per message.
std::vector<std::vector<std::string>> decode(const std::string& wire) {
  std::vector<std::vector<std::string>> out(1);
  size_t i = 0;
  while (i < wire.size()) {
    const auto flags = static_cast<unsigned char>(wire[i++]);
    uint64_t size = 0;
    const int width = (flags & 2) ? 8 : 1;
    for (int k = 0; k < width; ++k) size = (size << 8) | static_cast<unsigned char>(wire[i++]);
    out.back().push_back(wire.substr(i, size));
    i += size;
    if (!(flags & 1)) out.emplace_back();
  }
  out.pop_back();
  return out;
}

ConnectionInfo conn_with_key(const std::string& key, const std::string& scheme = "hmac-sha256") {
  ConnectionInfo c;
  c.key = key;
  c.signature_scheme = scheme;
  return c;
}

}  // namespace

TEST_CASE("hmac: RFC 4231 test case 2, in parts, and the schemes") {
  const std::string want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
  auto one = hmac_hex("hmac-sha256", "Jefe", {"what do ya want for nothing?"});
  REQUIRE(one);
  CHECK(*one == want);
  // Jupyter signs header, parent_header, metadata and content as one stream.
  auto parts = hmac_hex("hmac-sha256", "Jefe", {"what do ", "ya want", "", " for nothing?"});
  REQUIRE(parts);
  CHECK(*parts == want);
  auto sha512 = hmac_hex("hmac-sha512", "Jefe", {"what do ya want for nothing?"});
  REQUIRE(sha512);
  CHECK(sha512->substr(0, 32) == "164b7a7bfcf819e2e395fbe73b56e0a3");
  auto unsigned_ = hmac_hex("hmac-sha256", "", {"anything"});
  REQUIRE(unsigned_);
  CHECK(unsigned_->empty());
  CHECK_FALSE(hmac_hex("sha256", "k", {"x"}));
  CHECK_FALSE(hmac_hex("hmac-nosuchdigest", "k", {"x"}));
}

TEST_CASE("exit notice: frames, signature, parent and ZMTP encoding") {
  const auto conn = conn_with_key("Jefe");
  auto frames = signed_frames(conn, "stream.stderr", "{\"a\":1}", "{}", "{}", "{\"b\":2}");
  REQUIRE(frames);
  REQUIRE(frames->size() == 7);
  CHECK((*frames)[0] == "stream.stderr");
  CHECK((*frames)[1] == "<IDS|MSG>");
  CHECK((*frames)[2] == *hmac_hex("hmac-sha256", "Jefe", {"{\"a\":1}", "{}", "{}", "{\"b\":2}"}));

  const std::string parent =
      R"({"msg_id":"abc","msg_type":"execute_request","session":"s","username":"u","date":"","version":"5.3"})";
  auto wire = exit_notice_wire(conn, parent, "memory limit reached");
  REQUIRE(wire);
  const auto msgs = decode(*wire);
  REQUIRE(msgs.size() == 2);
  for (const auto& m : msgs) {
    REQUIRE(m.size() == 7);
    CHECK(m[2] == *hmac_hex("hmac-sha256", "Jefe", {m[3], m[4], m[5], m[6]}));
    CHECK(m[4] == parent);
  }
  auto h0 = nlohmann::json::parse(msgs[0][3]);
  auto h1 = nlohmann::json::parse(msgs[1][3]);
  CHECK(h0["msg_type"] == "stream");
  CHECK(h1["msg_type"] == "status");
  CHECK(h0["msg_id"] != h1["msg_id"]);  // clients drop a repeated signature
  CHECK(nlohmann::json::parse(msgs[0][6]) ==
        nlohmann::json{{"name", "stderr"}, {"text", "Kernel stopped: memory limit reached\n"}});
  CHECK(nlohmann::json::parse(msgs[1][6])["execution_state"] == "idle");

  // A broken parent becomes {}; no key, no signature.
  auto plain = exit_notice_wire(conn_with_key(""), "not json", "x");
  REQUIRE(plain);
  CHECK(decode(*plain)[0][4] == "{}");
  CHECK(decode(*plain)[0][2] == "");

  // What a client's libzmq would read: the scanner accepts it as 2 messages.
  ZmtpScanner scan(1 << 20);
  feed(scan, greeting() + ready_command());
  CHECK(scan.at_message_boundary());
  feed(scan, *wire);
  CHECK(scan.verdict() == ZmtpScanner::Verdict::kOk);
  CHECK(scan.messages() == 2);
  CHECK(scan.at_message_boundary());
  // Long frames (> 255 bytes) use the 8-byte size.
  const std::string big(300, 'x');
  const std::string enc = zmtp_encode_message({big});
  CHECK(enc.size() == 1 + 8 + 300);
  CHECK(static_cast<unsigned char>(enc[0]) == 2);
}

TEST_CASE("exit notice: no message boundary before the handshake or mid-message") {
  ZmtpScanner scan(1 << 20);
  CHECK_FALSE(scan.at_message_boundary());
  feed(scan, greeting());
  CHECK_FALSE(scan.at_message_boundary());  // READY not yet seen
  feed(scan, ready_command());
  CHECK(scan.at_message_boundary());
  feed(scan, std::string("\x01\x01t", 3));  // one frame with MORE
  CHECK_FALSE(scan.at_message_boundary());
  feed(scan, std::string("\x00\x05", 2) + "ab");  // last frame, body half-way
  CHECK_FALSE(scan.at_message_boundary());
  feed(scan, "cde");
  CHECK(scan.at_message_boundary());
}

// One shell message as a DEALER client sends it, signed with KEY.
std::string shell_message(const std::string& key, const std::string& header, const std::string& content = "{}",
                          std::vector<std::string> identities = {}) {
  auto sig = hmac_hex("hmac-sha256", key, {header, "{}", "{}", content});
  REQUIRE(sig);
  identities.insert(identities.end(), {"<IDS|MSG>", *sig, header, "{}", "{}", content});
  return zmtp_encode_message(identities);
}

// A shell tap with the connection key KEY on a client stream past its handshake.
struct ShellTap {
  std::string last;
  ExecuteRequestTap tap;
  ZmtpScanner scan{SIZE_MAX};
  ShellTap(const std::string& key, const std::string& scheme) : tap(&last, key, scheme) {
    scan.set_observer(&tap);
    feed(scan, greeting() + ready_command());
  }
};

TEST_CASE("shell tap: keeps the header of the last execute_request only") {
  ShellTap t("Jefe", "hmac-sha256");
  auto& [last, tap, scan] = t;
  const std::string exec1 = R"({"msg_id":"e1","msg_type":"execute_request"})";
  const std::string info = R"({"msg_id":"k1","msg_type":"kernel_info_request"})";
  feed(scan, shell_message("Jefe", exec1, R"({"code":"execute_request"})"));
  CHECK(last == exec1);
  feed(scan, shell_message("Jefe", info));
  CHECK(last == exec1);
  // Identities first; the content naming execute_request does not count.
  const std::string exec2 = R"({"msg_id":"e2","msg_type":"execute_request"})";
  const std::string msg = shell_message("Jefe", exec2, "{}", {"id1", "id2"});
  feed(scan, msg.substr(0, 7));  // split anywhere: the tap follows the stream
  feed(scan, msg.substr(7));
  CHECK(last == exec2);
  // A header over the bound is not copied.
  std::string huge =
      R"({"msg_type":"execute_request","pad":")" + std::string(ExecuteRequestTap::kMaxHeader, 'p') + "\"}";
  feed(scan, shell_message("Jefe", huge));
  CHECK(last == exec2);
  // A msg_type that is not a string is ignored, not thrown on.
  feed(scan, shell_message("Jefe", R"({"msg_type":["execute_request"]})"));
  CHECK(last == exec2);
  CHECK(scan.verdict() == ZmtpScanner::Verdict::kOk);
}

TEST_CASE("shell tap: only an execute_request signed with the connection key counts") {
  ShellTap t("Jefe", "");  // no scheme in the file: hmac-sha256
  auto& [last, tap, scan] = t;
  const std::string real = R"({"msg_id":"real","msg_type":"execute_request"})";
  const std::string forged = R"({"msg_id":"forged","msg_type":"execute_request"})";
  // A big cell is checked as it passes, fed in pieces.
  const std::string big = R"({"code":")" + std::string(3 << 20, 'x') + "\"}";
  const std::string wire = shell_message("Jefe", real, big);
  for (size_t off = 0; off < wire.size(); off += 4093) feed(scan, wire.substr(off, 4093));
  CHECK(last == real);
  // Unsigned, signed with another key, a signature of another message, one
  // that is too long, a message cut short after its header: all ignored.
  feed(scan, zmtp_encode_message({"<IDS|MSG>", "", forged, "{}", "{}", "{}"}));
  feed(scan, shell_message("guess", forged));
  feed(scan, zmtp_encode_message({"<IDS|MSG>", *hmac_hex("hmac-sha256", "Jefe", {real, "{}", "{}", "{}"}), forged, "{}",
                                  "{}", "{}"}));
  feed(scan, zmtp_encode_message({"<IDS|MSG>", std::string(4096, 'a'), forged, "{}", "{}", "{}"}));
  feed(scan,
       zmtp_encode_message({"<IDS|MSG>", *hmac_hex("hmac-sha256", "Jefe", {forged, "{}", "{}"}), forged, "{}", "{}"}));
  CHECK(last == real);
  // The signature covers the content too: the real header with other code
  // under its signature does not count either.
  std::string other = R"({"msg_id":"real2","msg_type":"execute_request"})";
  feed(scan, zmtp_encode_message({"<IDS|MSG>", *hmac_hex("hmac-sha256", "Jefe", {other, "{}", "{}", "{}"}), other, "{}",
                                  "{}", R"({"code":"rm -rf"})"}));
  CHECK(last == real);
  // Buffers after the content are not signed (Jupyter's rule).
  auto sig = hmac_hex("hmac-sha256", "Jefe", {other, "{}", "{}", "{}"});
  feed(scan, zmtp_encode_message({"<IDS|MSG>", *sig, other, "{}", "{}", "{}", "buffer"}));
  CHECK(last == other);
  CHECK(scan.verdict() == ZmtpScanner::Verdict::kOk);
}

TEST_CASE("shell tap: with no key in the connection file nothing is signed and any execute_request counts") {
  ShellTap t("", "hmac-sha256");
  auto& [last, tap, scan] = t;
  const std::string exec = R"({"msg_id":"e","msg_type":"execute_request"})";
  feed(scan, zmtp_encode_message({"<IDS|MSG>", "", exec, "{}", "{}", "{}"}));
  CHECK(last == exec);
}

TEST_CASE("exit reason: wall time, limits, signals, exit status, normal end") {
  ik::Plan plan;
  CHECK(ik::kernel_exit_reason(plan, 0, {}, false) == "");
  CHECK(ik::kernel_exit_reason(plan, 128 + SIGKILL, {}, false) == "killed by signal 9 (SIGKILL)");
  CHECK(ik::kernel_exit_reason(plan, 128 + SIGSEGV, {}, false) == "killed by signal 11 (SIGSEGV)");
  CHECK(ik::kernel_exit_reason(plan, 3, {}, false) == "exited with status 3");
  plan.limits.wall_seconds = 5;
  CHECK(ik::kernel_exit_reason(plan, 128 + SIGKILL, {}, true) ==
        "killed after the wall-time limit of 5s (--wall-time)");
  plan.limits.memory_bytes = 256ull << 20;
  CHECK(ik::kernel_exit_reason(plan, 128 + SIGKILL, {1, 0}, false) ==
        "killed by the memory limit of 256M (cgroup memory.max, --memory)");
}

TEST_CASE("client watch: JPY_PARENT_PID when it names an ancestor, else the parent") {
  const pid_t parent = getppid();
  CHECK(ik::client_pid(std::to_string(parent).c_str(), 77) == parent);
  CHECK(ik::client_pid("1", 77) == 77);  // what a kernel under a PID-1 init is given
  CHECK(ik::client_pid("0", 77) == 77);
  CHECK(ik::client_pid("", 77) == 77);
  CHECK(ik::client_pid(nullptr, 77) == 77);
  CHECK(ik::client_pid("12ab", 77) == 77);
  CHECK(ik::client_pid("-5", 77) == 77);
  CHECK(ik::client_pid("99999999999999999999", 77) == 77);
  // A live process that is not an ancestor (here a child; the same for
  // another user's) is not the client: ignored, unless the pool names it.
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    pause();
    _exit(0);
  }
  const std::string c = std::to_string(child);
  CHECK_FALSE(ik::is_ancestor(child));
  CHECK(ik::client_pid(c.c_str(), 77) == 77);
  CHECK(ik::client_pid(c.c_str(), 77, false) == child);
  CHECK(ik::client_pid(std::to_string(getpid()).c_str(), 77) == 77);  // not its own client
  CHECK(ik::is_ancestor(parent));
  CHECK_FALSE(ik::is_ancestor(1));
  // A pid whose process is gone is kept: the client died before the launcher looked.
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  CHECK(ik::client_pid(c.c_str(), 77) == child);
  auto w = ik::ClientWatch::open(c.c_str(), 77);
  CHECK(w.gone_at_start());
}

TEST_CASE("control tap: a shutdown_request counts only when signed with the connection key") {
  std::string last;
  ExecuteRequestTap tap(&last, "Jefe", "hmac-sha256", "shutdown_request");
  ZmtpScanner scan{SIZE_MAX};
  scan.set_observer(&tap);
  feed(scan, greeting() + ready_command());
  // another request, or an execute_request, is not it
  feed(scan, shell_message("Jefe", R"({"msg_id":"e1","msg_type":"execute_request"})"));
  CHECK(last.empty());
  // forged: signed with another key
  feed(scan, shell_message("other", R"({"msg_id":"f","msg_type":"shutdown_request"})", R"({"restart":false})"));
  CHECK(last.empty());
  const std::string real = R"({"msg_id":"s1","msg_type":"shutdown_request"})";
  feed(scan, shell_message("Jefe", real, R"({"restart":false})"));
  CHECK(last == real);
}
