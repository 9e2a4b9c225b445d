// ZMTP 3.x framing, read-only: follows a byte stream (greeting, then frames)
// just far enough to know where each frame starts and how big it is. The
// relay forwards bytes verbatim; this scanner lets it count messages and
// refuse oversized or malformed ones from the kernel before they are sent
// on. Nothing is copied or decoded (no mechanism, no metadata).
// Spec: https://rfc.zeromq.org/spec/23/ (ZMTP 3.0), /spec/37/ (3.1).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ik::relay {

// Optional view of the frames a scanner passes (the relay's Jupyter frame taps, relay/frame_tap.hpp).
class FrameObserver {
 public:
  virtual ~FrameObserver() = default;
  virtual void frame_begin(uint64_t size, bool command) = 0;
  virtual void frame_bytes(const unsigned char* p, size_t n) = 0;
  virtual void frame_end(bool more, bool command) = 0;
};

// One complete ZMTP message (not a command) with these frames, as bytes on
// the wire: flags (MORE on all but the last, LONG over 255 bytes), size, body.
std::string zmtp_encode_message(const std::vector<std::string>& frames);

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
  void set_observer(FrameObserver* o) { observer_ = o; }
  // True between two messages of an established session (greeting and a
  // command such as READY seen, no message half-way): a complete message
  // can be put into the stream here.
  bool at_message_boundary() const {
    return verdict_ == Verdict::kOk && state_ == State::kFlags && message_cost_ == 0 && commands_ > 0;
  }
  // What went wrong (set with the verdict), for the log.
  const std::string& reason() const { return reason_; }
  uint64_t messages() const { return messages_; }  // complete non-command messages
  uint64_t payload_bytes() const { return payload_; }
  // Size the current multipart message has reached when it was refused.
  uint64_t refused_size() const { return refused_size_; }

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
  size_t have_ = 0;  // bytes of the greeting / size field seen
  unsigned char flags_ = 0;
  unsigned char size_bytes_[8] = {};
  uint64_t body_left_ = 0;
  uint64_t message_cost_ = 0;  // of the multipart message in progress
  uint64_t messages_ = 0;
  uint64_t payload_ = 0;
  uint64_t refused_size_ = 0;
  uint64_t commands_ = 0;
  FrameObserver* observer_ = nullptr;
};

}  // namespace ik::relay
