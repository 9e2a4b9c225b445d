#include "relay/terminal_filter.hpp"

namespace ik {
namespace {

constexpr uint8_t kEsc = 0x1b, kBel = 0x07, kCan = 0x18, kSub = 0x1a;

// Length of the UTF-8 sequence a lead byte starts, 0 if it cannot lead.
uint8_t utf8_length(uint8_t c) {
  if (c >= 0xc2 && c <= 0xdf) return 2;
  if (c >= 0xe0 && c <= 0xef) return 3;
  if (c >= 0xf0 && c <= 0xf4) return 4;
  return 0;
}

// The allowed range of the second byte (rejects overlong forms, surrogates
// and code points above U+10FFFF), per RFC 3629.
bool second_byte_ok(uint8_t lead, uint8_t c) {
  uint8_t lo = 0x80, hi = 0xbf;
  if (lead == 0xe0) lo = 0xa0;
  else if (lead == 0xed) hi = 0x9f;
  else if (lead == 0xf0) lo = 0x90;
  else if (lead == 0xf4) hi = 0x8f;
  return c >= lo && c <= hi;
}

}  // namespace

size_t TerminalFilter::ground(uint8_t c, char* out) {
  if (c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7f)) {
    *out = static_cast<char>(c);
    return 1;
  }
  if (c == kEsc) {
    state_ = State::kEsc;
    ++removed_;
    return 0;
  }
  if (c < 0x80) {  // other C0 controls, DEL
    ++removed_;
    return 0;
  }
  seq_need_ = utf8_length(c);
  if (seq_need_ == 0) {  // stray continuation byte, 0xc0/0xc1, 0xf5..0xff
    *out = '?';
    return 1;
  }
  seq_[0] = c;
  seq_len_ = 1;
  state_ = State::kUtf8;
  return 0;
}

size_t TerminalFilter::utf8(uint8_t c, char* out, bool& reprocess) {
  const bool ok = seq_len_ == 1 ? second_byte_ok(seq_[0], c) : (c >= 0x80 && c <= 0xbf);
  if (!ok) {  // cut short: one '?' for the broken sequence, then look at c afresh
    state_ = State::kGround;
    reprocess = true;
    *out = '?';
    return 1;
  }
  seq_[seq_len_++] = c;
  if (seq_len_ < seq_need_) return 0;
  state_ = State::kGround;
  // U+0080..U+009F (C1 controls) are 0xc2 0x80..0x9f.
  if (seq_need_ == 2 && seq_[0] == 0xc2 && seq_[1] < 0xa0) {
    removed_ += 2;
    return 0;
  }
  for (uint8_t i = 0; i < seq_need_; ++i) out[i] = static_cast<char>(seq_[i]);
  return seq_need_;
}

size_t TerminalFilter::filter(const char* in, size_t n, char* out) {
  size_t w = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<uint8_t>(in[i]);
    bool reprocess = false;
    switch (state_) {
      case State::kGround: w += ground(c, out + w); break;
      case State::kUtf8: w += utf8(c, out + w, reprocess); break;
      case State::kEsc:
        ++removed_;
        if (c == '[') state_ = State::kCsi;
        else if (c == ']' || c == 'P' || c == 'X' || c == '^' || c == '_') state_ = State::kString;
        else if (c >= 0x20 && c <= 0x2f) {  // intermediate bytes: the final one follows
        } else if (c == kEsc) {
        } else state_ = State::kGround;  // final byte (or a control that aborts)
        break;
      case State::kCsi:
        if (c >= 0x20 && c <= 0x3f) ++removed_;  // parameters, intermediates
        else if (c >= 0x40 && c <= 0x7e) {       // final byte
          ++removed_;
          state_ = State::kGround;
        } else {  // anything else aborts the sequence (as in a terminal)
          state_ = State::kGround;
          reprocess = true;
        }
        break;
      case State::kString:  // OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \)
        ++removed_;
        if (c == kBel || c == kCan || c == kSub) state_ = State::kGround;
        else if (c == kEsc) state_ = State::kStringEsc;
        break;
      case State::kStringEsc:
        if (c == '\\') {
          ++removed_;
          state_ = State::kGround;
        } else {  // ESC started a new sequence
          state_ = State::kEsc;
          reprocess = true;
        }
        break;
    }
    if (reprocess) --i;
  }
  return w;
}

size_t TerminalFilter::finish(char* out) {
  if (state_ != State::kUtf8) return 0;
  state_ = State::kGround;
  *out = '?';
  return 1;
}

}  // namespace ik
