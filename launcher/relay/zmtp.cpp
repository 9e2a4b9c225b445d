#include "relay/zmtp.hpp"

#include <algorithm>

namespace ik::relay {
namespace {

constexpr unsigned char kMore = 0x01;
constexpr unsigned char kLong = 0x02;
constexpr unsigned char kCommand = 0x04;
constexpr unsigned char kReservedBits = 0xF8;

}  // namespace

ZmtpScanner::Verdict ZmtpScanner::fail(Verdict v, std::string why) {
  verdict_ = v;
  reason_ = std::move(why);
  return v;
}

// Called once flags and size are known: checks the frame before any of its
// body is let through.
ZmtpScanner::Verdict ZmtpScanner::start_frame() {
  uint64_t size = 0;
  const size_t width = (flags_ & kLong) ? 8 : 1;
  for (size_t i = 0; i < width; ++i) size = (size << 8) | size_bytes_[i];  // network byte order
  const bool command = flags_ & kCommand;
  // Saturating: a hostile 8-byte size must not wrap the sum.
  const uint64_t cost = size > max_ ? UINT64_MAX : size + kFrameCost;
  const uint64_t total = command ? cost : std::min<uint64_t>(UINT64_MAX - kFrameCost, message_cost_) + cost;
  if (total > max_ || cost == UINT64_MAX) {
    refused_size_ = command ? size : message_cost_ + size;
    return fail(Verdict::kOversized, std::string(command ? "a command frame" : "a message") + " of " +
                                         std::to_string(refused_size_) + " bytes");
  }
  if (!command) message_cost_ = total;
  body_left_ = size;
  if (observer_) observer_->frame_begin(size, command);
  state_ = State::kBody;
  return Verdict::kOk;
}

void ZmtpScanner::end_frame() {
  state_ = State::kFlags;
  if (observer_) observer_->frame_end(flags_ & kMore, flags_ & kCommand);
  if (flags_ & kCommand) ++commands_;
  if (!(flags_ & kCommand) && !(flags_ & kMore)) {
    ++messages_;
    message_cost_ = 0;
  }
}

ZmtpScanner::Verdict ZmtpScanner::feed(const unsigned char* p, size_t n) {
  if (verdict_ != Verdict::kOk) return verdict_;
  const unsigned char* end = p + n;
  while (p < end) {
    switch (state_) {
      case State::kGreeting: {
        const size_t take = std::min<size_t>(kGreetingSize - have_, end - p);
        std::copy(p, p + take, greeting_ + have_);
        have_ += take;
        p += take;
        if (have_ < kGreetingSize) break;
        // signature %xFF 8*OCTET %x7F, then version major >= 3.
        if (greeting_[0] != 0xFF || (greeting_[9] & 0x01) == 0 || greeting_[10] < 3)
          return fail(Verdict::kProtocolError, "not a ZMTP 3 greeting");
        state_ = State::kFlags;
        break;
      }
      case State::kFlags:
        flags_ = *p++;
        if (flags_ & kReservedBits) return fail(Verdict::kProtocolError, "reserved frame flag bits set");
        if ((flags_ & kCommand) && (flags_ & kMore)) return fail(Verdict::kProtocolError, "a command frame with MORE");
        have_ = 0;
        state_ = State::kSize;
        break;
      case State::kSize: {
        const size_t width = (flags_ & kLong) ? 8 : 1;
        const size_t take = std::min<size_t>(width - have_, end - p);
        std::copy(p, p + take, size_bytes_ + have_);
        have_ += take;
        p += take;
        if (have_ < width) break;
        if (start_frame() != Verdict::kOk) return verdict_;
        if (body_left_ == 0) end_frame();
        break;
      }
      case State::kBody: {
        const uint64_t take = std::min<uint64_t>(body_left_, static_cast<uint64_t>(end - p));
        if (observer_ && take) observer_->frame_bytes(p, static_cast<size_t>(take));
        body_left_ -= take;
        p += take;
        if (!(flags_ & kCommand)) payload_ += take;
        if (body_left_ == 0) end_frame();
        break;
      }
    }
  }
  return Verdict::kOk;
}

std::string zmtp_encode_message(const std::vector<std::string>& frames) {
  std::string out;
  for (size_t i = 0; i < frames.size(); ++i) {
    const std::string& f = frames[i];
    unsigned char flags = i + 1 < frames.size() ? kMore : 0;
    if (f.size() > 255) {
      out.push_back(static_cast<char>(flags | kLong));
      for (int shift = 56; shift >= 0; shift -= 8)
        out.push_back(static_cast<char>((uint64_t{f.size()} >> shift) & 0xFF));
    } else {
      out.push_back(static_cast<char>(flags));
      out.push_back(static_cast<char>(f.size()));
    }
    out += f;
  }
  return out;
}

}  // namespace ik::relay
