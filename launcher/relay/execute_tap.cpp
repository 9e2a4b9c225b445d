#include "relay/execute_tap.hpp"

#include <nlohmann/json.hpp>

#include "common/log.hpp"

namespace ik::relay {
namespace {
constexpr std::string_view kDelimiter = "<IDS|MSG>";
// jupyter_client's default when the file names no scheme.
constexpr const char* kDefaultScheme = "hmac-sha256";
}  // namespace

ExecuteRequestTap::ExecuteRequestTap(std::string* last, std::string key, std::string scheme, std::string msg_type)
    : last_(last),
      key_(std::move(key)),
      scheme_(scheme.empty() ? kDefaultScheme : std::move(scheme)),
      msg_type_(std::move(msg_type)) {}

void ExecuteRequestTap::frame_begin(uint64_t size, bool command) {
  frame_.clear();
  keep_ = false;
  if (command) return;
  const int next = after_delimiter_ < 0 ? -1 : after_delimiter_ + 1;
  if (next < 0) {
    keep_ = size == kDelimiter.size();
  } else if (next == kSignature) {
    keep_ = true;
    fits_ = size <= kMaxSignature;
  } else if (next == kHeader) {
    keep_ = true;
    fits_ = size <= kMaxHeader;
  }
}

void ExecuteRequestTap::frame_bytes(const unsigned char* p, size_t n) {
  const auto* s = reinterpret_cast<const char*>(p);
  if (keep_) {
    // Bounded: past the bound the frame is not wanted anyway.
    const size_t room = kMaxHeader - std::min(kMaxHeader, frame_.size());
    frame_.append(s, std::min(room, n));
  } else if (wanted_) {
    mac_.update({s, n});  // parent_header, metadata, content
  }
}

void ExecuteRequestTap::frame_end(bool more, bool command) {
  if (command) return;
  if (after_delimiter_ < 0) {
    if (keep_ && frame_ == kDelimiter) after_delimiter_ = 0;
  } else {
    ++after_delimiter_;
    if (after_delimiter_ == kSignature) {
      signature_ = fits_ ? frame_ : "-";  // "-" matches no hex digest
    } else if (after_delimiter_ == kHeader) {
      if (fits_) header_done();
    } else if (after_delimiter_ == kContent && wanted_) {
      wanted_ = false;
      auto mac = mac_.hex();
      if (mac && same_signature(*mac, signature_)) *last_ = std::move(header_);
    }
  }
  keep_ = false;
  frame_.clear();
  if (!more) {
    after_delimiter_ = -1;
    wanted_ = false;
  }
}

void ExecuteRequestTap::header_done() {
  // A cheap test first: most traffic is not the wanted request.
  if (frame_.find(msg_type_) == std::string::npos) return;
  auto h = nlohmann::json::parse(frame_, nullptr, false);
  if (!h.is_object()) return;
  auto t = h.find("msg_type");
  if (t == h.end() || !t->is_string() || *t != msg_type_) return;
  if (key_.empty()) {
    last_->assign(frame_);  // nothing is signed: nothing to check
    return;
  }
  if (auto st = mac_.start(scheme_, key_); !st) {
    // Once per connection is enough to explain a notice without a parent.
    if (!warned_)
      log::warn("relay: cannot check a %s's signature: %s", msg_type_.c_str(), st.error().describe().c_str());
    warned_ = true;
    return;
  }
  mac_.update(frame_);
  header_.swap(frame_);
  wanted_ = true;
}

}  // namespace ik::relay
