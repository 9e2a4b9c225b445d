#include "relay/frame_tap.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

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

ExecuteRequestTap::ExecuteRequestTap(std::string* last)
    : JupyterFrameTap(Part::kHeader, [last](std::string_view header, bool whole) {
        // A cheap test first: most shell traffic is not execute_request.
        if (!whole || header.find("execute_request") == std::string_view::npos) return;
        auto h = nlohmann::json::parse(header, nullptr, false);
        if (!h.is_object()) return;
        auto t = h.find("msg_type");
        if (t != h.end() && t->is_string() && *t == "execute_request") last->assign(header);
      }) {}

}  // namespace ik::relay
