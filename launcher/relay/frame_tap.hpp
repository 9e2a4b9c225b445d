// Reads one frame of each Jupyter message as it passes through the relay
// (every byte is still relayed unchanged). Used on the kernel -> client
// control stream, to notice the kernel's shutdown_reply (see
// apply/shutdown_watch.hpp). The shell stream's execute_request tap, which
// checks signatures, is relay/execute_tap.hpp.
// Bounded: at most kMaxFrame bytes of the frame are copied.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "relay/zmtp.hpp"

namespace ik::relay {

class JupyterFrameTap : public FrameObserver {
 public:
  // Jupyter's wire format: [identities...] "<IDS|MSG>" signature header
  // parent_header metadata content [buffers...].
  enum class Part { kHeader = 2, kParentHeader = 3 };  // frames after the delimiter, counting it as 0
  // Called with the first kMaxFrame bytes of that frame of each message,
  // once the frame is complete; `whole` is false when it was cut short.
  using Sink = std::function<void(std::string_view frame, bool whole)>;
  JupyterFrameTap(Part part, Sink sink) : part_(static_cast<int>(part)), sink_(std::move(sink)) {}
  void frame_begin(uint64_t size, bool command) override;
  void frame_bytes(const unsigned char* p, size_t n) override;
  void frame_end(bool more, bool command) override;

  static constexpr size_t kMaxFrame = 16 * 1024;

 private:
  int part_;
  Sink sink_;
  int after_delimiter_ = -1;  // frames since "<IDS|MSG>" in this message; -1: not seen yet
  std::string frame_;         // the delimiter candidate or the wanted frame's start
  bool keep_ = false;         // copying this frame
  bool whole_ = false;        // the frame fits in kMaxFrame
};

}  // namespace ik::relay
