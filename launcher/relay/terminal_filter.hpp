// What the sandboxed program writes to its stdout/stderr must not drive the
// terminal of whoever watches it (the Jupyter server's or the grader's):
// escape sequences can set the window title, clear the screen, rewrite what
// was printed, ask the terminal to report or (on some terminals) to paste
// text back, i.e. type into the caller's shell. TerminalFilter keeps
// printable UTF-8 text and drops everything a terminal would interpret.
//
// Removed: ESC sequences (CSI "ESC [", OSC "ESC ]", DCS/SOS/PM/APC strings up
// to BEL or ST, and two-byte escapes), C0 controls except \n and \t (so \r,
// \b, BEL, and the CAN/SUB that abort sequences go too: a bare \r or \b lets
// output overwrite what is already on the screen), DEL, C1 controls (U+0080..
// U+009F, which some terminals read as 8-bit CSI/OSC). Bytes that are not
// valid UTF-8 (overlong, surrogates, stray continuation bytes, a raw 0x9B)
// become '?'. State carries over between chunks, so a sequence split across
// two reads is still removed. Output is never longer than input + 3 bytes.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ik {

class TerminalFilter {
 public:
  // Filters `n` bytes of `in` into `out` (room for n + kSlack bytes);
  // returns how many bytes it wrote. `removed` counts dropped input bytes.
  static constexpr size_t kSlack = 4;
  size_t filter(const char* in, size_t n, char* out);
  // End of the stream: a UTF-8 sequence cut short becomes '?'.
  size_t finish(char* out);
  uint64_t removed() const { return removed_; }

 private:
  enum class State : uint8_t { kGround, kEsc, kCsi, kString, kStringEsc, kUtf8 };
  size_t ground(uint8_t c, char* out);
  size_t utf8(uint8_t c, char* out, bool& reprocess);
  State state_ = State::kGround;
  uint8_t seq_[4] = {};
  uint8_t seq_len_ = 0, seq_need_ = 0;
  uint64_t removed_ = 0;
};

}  // namespace ik
