// libFuzzer target: the ZMTP frame scanner, which reads bytes a hostile
// kernel controls. Checks that feeding the same stream in one piece or in
// arbitrary pieces gives the same verdict and counts (no state is lost
// across reads), and that nothing over the cap is ever accepted. The shell
// tap (execute_request headers, signatures checked with a key) rides on
// both and must agree too.
#include <cstddef>
#include <cstdint>

#include <string>

#include "relay/execute_tap.hpp"
#include "relay/zmtp.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t cap = 1 + (data[0] << 4);  // small caps reach the oversized path
  const size_t piece = 1 + data[1] % 17;
  data += 2;
  size -= 2;
  ik::relay::ZmtpScanner whole(cap), pieces(cap);
  std::string whole_last, pieces_last;
  ik::relay::ExecuteRequestTap whole_tap(&whole_last, "k", ""), pieces_tap(&pieces_last, "k", "");
  whole.set_observer(&whole_tap);
  pieces.set_observer(&pieces_tap);
  whole.feed(data, size);
  for (size_t off = 0; off < size && pieces.verdict() == ik::relay::ZmtpScanner::Verdict::kOk; off += piece)
    pieces.feed(data + off, off + piece <= size ? piece : size - off);
  if (whole.verdict() != pieces.verdict() || whole.messages() != pieces.messages()) __builtin_trap();
  if (whole.verdict() == ik::relay::ZmtpScanner::Verdict::kOk && whole.payload_bytes() != pieces.payload_bytes())
    __builtin_trap();
  if (whole.payload_bytes() > size) __builtin_trap();
  if (whole.verdict() == ik::relay::ZmtpScanner::Verdict::kOk &&
      (whole_last != pieces_last || whole_last.size() > ik::relay::ExecuteRequestTap::kMaxHeader))
    __builtin_trap();
  return 0;
}
