// The ZMTP scanner on hand-built streams: the relay's only defence against
// oversized or malformed kernel output, so each branch is pinned here.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "relay/zmtp.hpp"

using ik::relay::ZmtpScanner;
using V = ZmtpScanner::Verdict;

namespace {

std::string greeting(unsigned char major = 3) {
  std::string g(64, '\0');
  g[0] = '\xff';
  g[9] = '\x7f';
  g[10] = static_cast<char>(major);
  g[11] = 1;
  g.replace(12, 4, "NULL");
  return g;
}

std::string frame(const std::string& body, bool more = false, bool command = false, bool force_long = false) {
  std::string f;
  const bool is_long = force_long || body.size() > 255;
  f += static_cast<char>((more ? 1 : 0) | (is_long ? 2 : 0) | (command ? 4 : 0));
  if (is_long) {
    for (int i = 7; i >= 0; --i) f += static_cast<char>((static_cast<uint64_t>(body.size()) >> (8 * i)) & 0xff);
  } else {
    f += static_cast<char>(body.size());
  }
  return f + body;
}

V feed(ZmtpScanner& s, const std::string& bytes) {
  return s.feed(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

}  // namespace

TEST_CASE("zmtp: greeting, handshake command, then messages are counted") {
  ZmtpScanner s(1 << 20);
  const std::string stream = greeting() + frame("\x05READY", false, true) + frame("id", true) + frame("") + frame("x") +
                             frame(std::string(300, 'y'));
  CHECK(feed(s, stream) == V::kOk);
  CHECK(s.messages() == 3);  // [id, ""], [x], [300 y]; the command is not a message
  CHECK(s.payload_bytes() == 2 + 0 + 1 + 300);
}

TEST_CASE("zmtp: byte-by-byte feeding gives the same result") {
  const std::string stream = greeting() + frame("a", true) + frame(std::string(1000, 'b'), false, false, true);
  ZmtpScanner whole(1 << 20), bytes(1 << 20);
  feed(whole, stream);
  for (char c : stream) feed(bytes, std::string(1, c));
  CHECK(whole.messages() == 1);
  CHECK(bytes.messages() == 1);
  CHECK(bytes.payload_bytes() == whole.payload_bytes());
}

TEST_CASE("zmtp: a frame over the cap is refused at its header") {
  ZmtpScanner s(4096);
  CHECK(feed(s, greeting()) == V::kOk);
  std::string big = frame(std::string(5000, 'z'));
  // Only the header is needed to refuse it.
  CHECK(feed(s, big.substr(0, 9)) == V::kOversized);
  CHECK(s.refused_size() == 5000);
  CHECK(feed(s, frame("small")) == V::kOversized);  // stays refused
}

TEST_CASE("zmtp: many frames under the cap add up, 64 bytes each included") {
  ZmtpScanner s(4096);
  std::string stream = greeting();
  for (int i = 0; i < 60; ++i) stream += frame("", true);  // 60 * 64 = 3840
  CHECK(feed(s, stream) == V::kOk);
  CHECK(feed(s, frame(std::string(200, 'q'), true)) == V::kOversized);
}

TEST_CASE("zmtp: a complete message resets the sum") {
  ZmtpScanner s(4096);
  std::string stream = greeting();
  for (int i = 0; i < 10; ++i) stream += frame(std::string(3000, 'm'));
  CHECK(feed(s, stream) == V::kOk);
  CHECK(s.messages() == 10);
}

TEST_CASE("zmtp: an 8-byte size near 2^64 does not wrap the sum") {
  ZmtpScanner s(4096);
  std::string hdr = greeting() + frame("a", true);
  hdr += '\x02';
  hdr += std::string(8, '\xff');
  CHECK(feed(s, hdr) == V::kOversized);
}

TEST_CASE("zmtp: malformed streams are protocol errors") {
  SUBCASE("not a ZMTP greeting") {
    ZmtpScanner s(4096);
    CHECK(feed(s, std::string(64, 'B')) == V::kProtocolError);
  }
  SUBCASE("ZMTP 2 greeting") {
    ZmtpScanner s(4096);
    CHECK(feed(s, greeting(1)) == V::kProtocolError);
  }
  SUBCASE("reserved flag bits") {
    ZmtpScanner s(4096);
    CHECK(feed(s, greeting() + "\x10\x01"
                               "a") == V::kProtocolError);
  }
  SUBCASE("a command with MORE") {
    ZmtpScanner s(4096);
    CHECK(feed(s, greeting() + "\x05\x01"
                               "a") == V::kProtocolError);
  }
}
