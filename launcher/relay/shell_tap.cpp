#include "relay/shell_tap.hpp"

#include <nlohmann/json.hpp>

namespace ik::relay {
namespace {
constexpr std::string_view kDelimiter = "<IDS|MSG>";
}

void ExecuteHeaderTap::frame_begin(uint64_t size, bool command) {
  frame_.clear();
  keep_ = !command && ((want_ == Want::kDelimiter && size == kDelimiter.size()) ||
                       (want_ == Want::kHeader && size <= kMaxHeader));
}

void ExecuteHeaderTap::frame_bytes(const unsigned char* p, size_t n) {
  if (keep_) frame_.append(reinterpret_cast<const char*>(p), n);
}

void ExecuteHeaderTap::frame_end(bool more, bool command) {
  if (command) return;
  switch (want_) {
    case Want::kDelimiter:
      if (keep_ && frame_ == kDelimiter) want_ = Want::kSignature;
      break;
    case Want::kSignature: want_ = Want::kHeader; break;
    case Want::kHeader:
      // A cheap test first: most shell traffic is not execute_request.
      if (keep_ && frame_.find("execute_request") != std::string::npos) {
        auto h = nlohmann::json::parse(frame_, nullptr, false);
        if (h.is_object()) {
          auto t = h.find("msg_type");
          if (t != h.end() && t->is_string() && *t == "execute_request") *last_ = frame_;
        }
      }
      want_ = Want::kRest;
      break;
    case Want::kRest: break;
  }
  keep_ = false;
  frame_.clear();
  if (!more) want_ = Want::kDelimiter;
}

}  // namespace ik::relay
