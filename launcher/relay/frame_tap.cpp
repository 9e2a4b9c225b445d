#include "relay/frame_tap.hpp"

#include <algorithm>

namespace ik::relay {
namespace {
constexpr std::string_view kDelimiter = "<IDS|MSG>";
}

void JupyterFrameTap::frame_begin(uint64_t size, bool command) {
  frame_.clear();
  whole_ = size <= kMaxFrame;
  keep_ = !command && ((after_delimiter_ < 0 && size == kDelimiter.size()) || after_delimiter_ + 1 == part_);
}

void JupyterFrameTap::frame_bytes(const unsigned char* p, size_t n) {
  if (!keep_) return;
  const size_t room = kMaxFrame - std::min(kMaxFrame, frame_.size());
  frame_.append(reinterpret_cast<const char*>(p), std::min(room, n));
}

void JupyterFrameTap::frame_end(bool more, bool command) {
  if (command) return;
  if (after_delimiter_ < 0) {
    if (keep_ && frame_ == kDelimiter) after_delimiter_ = 0;
  } else if (++after_delimiter_ == part_ && keep_) {
    sink_(frame_, whole_);
  }
  keep_ = false;
  frame_.clear();
  if (!more) after_delimiter_ = -1;
}

}  // namespace ik::relay
