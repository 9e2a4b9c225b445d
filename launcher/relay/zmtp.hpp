// ZMTP 3.x framing, read-only: follows a byte stream (greeting, then frames)
// just far enough to know where each frame starts and how big it is. The
// relay forwards bytes verbatim; this scanner lets it count messages and
// refuse oversized or malformed ones from the kernel before they are sent
// on. Nothing is copied or decoded (no mechanism, no metadata).
// Spec: https://rfc.zeromq.org/spec/23/ (ZMTP 3.0), /spec/37/ (3.1).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace ik::relay {

class ZmtpScanner {
 public:
  enum class Verdict { kOk, kOversized, kProtocolError };

  // `max_message_bytes`: cap on one message (all frames of a multipart
  // message, each counted with kFrameCost extra so that a flood of empty
  // frames counts too) and on any single command frame.
  explicit ZmtpScanner(size_t max_message_bytes) : max_(max_message_bytes) {}

  // Consumes the next n bytes of the stream. After a verdict other than
  // kOk the scanner stays in that state and the stream must be cut: the
  // offending bytes are the ones passed in this call.
  Verdict feed(const unsigned char* p, size_t n);

  Verdict verdict() const { return verdict_; }
  // What went wrong (set with the verdict), for the log.
  const std::string& reason() const { return reason_; }
  uint64_t messages() const { return messages_; }  // complete non-command messages
  uint64_t payload_bytes() const { return payload_; }
  // Size the current multipart message has reached when it was refused.
  uint64_t refused_size() const { return refused_size_; }

  // Optional: called with the first kHeaderPeek bytes of each message's
  // Jupyter header frame (the second frame after "<IDS|MSG>"), once that
  // frame is complete. Used on the kernel's control replies only.
  using HeaderSink = std::function<void(std::string_view header)>;
  void watch_headers(HeaderSink sink) { header_sink_ = std::move(sink); }
  static constexpr size_t kHeaderPeek = 1024;

  // libzmq's per-frame bookkeeping, counted against the cap.
  static constexpr size_t kFrameCost = 64;
  static constexpr size_t kGreetingSize = 64;

 private:
  enum class State { kGreeting, kFlags, kSize, kBody };
  Verdict fail(Verdict v, std::string why);
  Verdict start_frame();
  void end_frame();

  size_t max_;
  State state_ = State::kGreeting;
  Verdict verdict_ = Verdict::kOk;
  std::string reason_;
  unsigned char greeting_[kGreetingSize] = {};
  size_t have_ = 0;        // bytes of the greeting / size field seen
  unsigned char flags_ = 0;
  unsigned char size_bytes_[8] = {};
  uint64_t body_left_ = 0;
  uint64_t message_cost_ = 0;  // of the multipart message in progress
  uint64_t messages_ = 0;
  uint64_t payload_ = 0;
  uint64_t refused_size_ = 0;
  // Jupyter framing, only while header_sink_ is set.
  void peek(const unsigned char* p, size_t n);
  void peek_frame_end();
  HeaderSink header_sink_;
  int frames_after_delimiter_ = -1;  // -1: delimiter not seen yet in this message
  std::string frame_start_;          // first kHeaderPeek bytes of the current frame
};

}  // namespace ik::relay
