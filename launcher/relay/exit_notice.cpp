#include "relay/exit_notice.hpp"

#include <sys/random.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "relay/hmac.hpp"
#include "relay/zmtp.hpp"

namespace ik::relay {
namespace {

// 32 hex digits, as jupyter_client's msg_ids (uuid4().hex).
std::string random_id() {
  unsigned char b[16] = {};
  if (::getrandom(b, sizeof b, 0) != sizeof b) {
    // Uniqueness is all that matters (clients drop a repeated signature).
    const auto t = std::chrono::steady_clock::now().time_since_epoch().count();
    for (size_t i = 0; i < sizeof b; ++i)
      b[i] = static_cast<unsigned char>(t >> (8 * (i % 8))) ^ static_cast<unsigned char>(i * 37);
  }
  char out[33];
  for (size_t i = 0; i < sizeof b; ++i) std::snprintf(out + 2 * i, 3, "%02x", b[i]);
  return std::string(out, 32);
}

std::string utc_now_iso() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() % 1000000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(us));
  return buf;
}

}  // namespace

Result<std::vector<std::string>> signed_frames(const ConnectionInfo& conn, const std::string& topic,
                                               const std::string& header, const std::string& parent_header,
                                               const std::string& metadata, const std::string& content) {
  // jupyter_client's default when the file names no scheme.
  const std::string scheme = conn.signature_scheme.empty() ? "hmac-sha256" : conn.signature_scheme;
  auto sig = hmac_hex(scheme, conn.key, {header, parent_header, metadata, content});
  if (!sig) return sig.error();
  return std::vector<std::string>{topic, "<IDS|MSG>", *sig, header, parent_header, metadata, content};
}

std::string message_header(const std::string& msg_type, const std::string& session) {
  return nlohmann::json{{"msg_id", random_id()}, {"session", session},   {"username", "isolated-kernel-launcher"},
                        {"date", utc_now_iso()}, {"msg_type", msg_type}, {"version", "5.3"}}
      .dump();
}

Result<std::string> exit_notice_wire(const ConnectionInfo& conn, const std::string& parent_header,
                                     const std::string& why) {
  // The parent must be a JSON object; anything else becomes {}.
  auto parent = nlohmann::json::parse(parent_header, nullptr, false);
  const std::string parent_text = parent.is_object() ? parent_header : "{}";
  const std::string session = random_id();
  const nlohmann::json stream = {{"name", "stderr"}, {"text", "Kernel stopped: " + why + "\n"}};
  const nlohmann::json status = {{"execution_state", "idle"}};
  std::string wire;
  for (const auto& [type, content] : {std::pair{"stream", stream}, std::pair{"status", status}}) {
    // Topics as ipykernel writes them ("stream.stderr", "kernel.<id>.status");
    // clients subscribe to everything.
    const std::string topic = std::string(type) == "stream" ? "stream.stderr" : "kernel." + session + ".status";
    auto frames = signed_frames(conn, topic, message_header(type, session), parent_text, "{}",
                                content.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    if (!frames) return frames.error();
    wire += zmtp_encode_message(*frames);
  }
  return wire;
}

}  // namespace ik::relay
