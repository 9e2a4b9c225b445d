// Reads the header of client -> kernel shell messages as they pass, to keep
// the last execute_request's header: the launcher's notice of why the
// kernel died names it as parent_header, so clients show the notice in the
// output of the cell that was running. Bounded: only the header frame, up
// to kMaxHeader bytes, is copied; every byte is still relayed unchanged.
#pragma once
#include <cstdint>
#include <string>

#include "relay/zmtp.hpp"

namespace ik::relay {

class ExecuteHeaderTap : public FrameObserver {
 public:
  // `last` receives the header (JSON text) of each execute_request seen.
  explicit ExecuteHeaderTap(std::string* last) : last_(last) {}
  void frame_begin(uint64_t size, bool command) override;
  void frame_bytes(const unsigned char* p, size_t n) override;
  void frame_end(bool more, bool command) override;

  static constexpr size_t kMaxHeader = 16 * 1024;

 private:
  // Jupyter's wire format: [identities...] "<IDS|MSG>" signature header
  // parent_header metadata content [buffers...].
  enum class Want { kDelimiter, kSignature, kHeader, kRest };
  std::string* last_;
  Want want_ = Want::kDelimiter;
  std::string frame_;    // the delimiter candidate or the header
  bool keep_ = false;    // copying this frame
};

}  // namespace ik::relay
