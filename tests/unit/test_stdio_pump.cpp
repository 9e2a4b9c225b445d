// TerminalFilter on crafted byte strings, and StdioPump copying real pipes
// to real pipes and pseudo-terminals (back-pressure, a vanished reader,
// what is left at exit).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <termios.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "relay/stdio_pump.hpp"
#include "relay/terminal_filter.hpp"

using ik::StdioPump;
using ik::TerminalFilter;
using ik::UniqueFd;

namespace {

std::string filtered(const std::string& in, size_t piece = 0) {
  TerminalFilter f;
  std::string out;
  if (piece == 0) piece = in.size() ? in.size() : 1;
  for (size_t i = 0; i < in.size(); i += piece) {
    const size_t n = std::min(piece, in.size() - i);
    std::string buf(n + TerminalFilter::kSlack, '\0');
    buf.resize(f.filter(in.data() + i, n, buf.data()));
    out += buf;
  }
  char tail[TerminalFilter::kSlack];
  out.append(tail, f.finish(tail));
  return out;
}

// Split at every byte too: state must carry over between reads.
void check(const std::string& in, const std::string& want) {
  CHECK(filtered(in) == want);
  CHECK(filtered(in, 1) == want);
  CHECK(filtered(in, 2) == want);
}

}  // namespace

TEST_CASE("terminal filter keeps text, newlines, tabs and UTF-8") {
  check("plain text\n\tindented\n", "plain text\n\tindented\n");
  check("Gr\xc3\xbc\xc3\x9f"
        "e \xe2\x82\xac \xf0\x9f\x90\x8d\n",
        "Gr\xc3\xbc\xc3\x9f"
        "e \xe2\x82\xac \xf0\x9f\x90\x8d\n");
  check("Traceback (most recent call last):\n  File \"<x>\", line 1\n",
        "Traceback (most recent call last):\n  File \"<x>\", line 1\n");
}

TEST_CASE("terminal filter removes escape sequences and controls") {
  check("a\x1b]0;pwned\x07"
        "b",
        "ab");                                  // OSC title, BEL-terminated
  check("a\x1b]52;c;ZWNobwo=\x1b\\b", "ab");    // OSC 52 clipboard, ST-terminated
  check("a\x1b[2Jb\x1b[1;31mc\x1b[0m", "abc");  // CSI clear screen, colours
  check("a\x1bP+q544e\x1b\\b", "ab");           // DCS (terminal query)
  check("a\x1b_apc\x1b\\b\x1b^pm\x07"
        "c",
        "abc");  // APC, PM
  check("a\x1b"
        "cb\x1b(Bc\x1b"
        "7d",
        "abcd");  // two-byte escapes (RIS), charset, DECSC
  check(std::string("a\rb\bc\x07"
                    "d\x7f"
                    "e\x00"
                    "f\r\n",
                    13),
        "abcdef\n");
  check("a\xc2\x9b"
        "2Jb\xc2\x9d"
        "0;x\xc2\x9c"
        "c",
        "a2Jb0;xc");               // C1 CSI/OSC/ST (UTF-8) dropped
  check("a\x1b[2\x1b[3Jb", "ab");  // ESC inside CSI starts a new sequence
}

TEST_CASE("terminal filter replaces invalid UTF-8") {
  check("a\x9b"
        "b",
        "a?b");  // raw 8-bit CSI
  check("a\xc0\xaf"
        "b",
        "a??b");  // overlong '/'
  check("a\xed\xa0\x80"
        "b",
        "a???b");  // surrogate (the lead fails, then two stray continuations)
  check("a\xe2\x82"
        "b",
        "a?b");  // cut short
  check("a\xf5\x80"
        "b",
        "a??b");  // beyond U+10FFFF
  CHECK(filtered("end\xe2\x82") == "end?");
}

namespace {

struct Pipe {
  UniqueFd r, w;
  Pipe() {
    int p[2];
    REQUIRE(pipe2(p, O_CLOEXEC) == 0);
    r.reset(p[0]);
    w.reset(p[1]);
  }
};

std::unique_ptr<StdioPump> pump_to(Pipe& src, int sink, size_t buffer = StdioPump::kDefaultBuffer) {
  REQUIRE(fcntl(src.r.get(), F_SETFL, O_NONBLOCK) == 0);
  std::vector<StdioPump::Stream> streams;
  streams.push_back(StdioPump::Stream{"stderr", std::move(src.r), sink});
  auto p = StdioPump::create(std::move(streams), buffer);
  REQUIRE(p);
  return std::move(*p);
}

bool readable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1;
}

std::string read_some(int fd, int ms = 2000) {
  std::string out;
  char buf[65536];
  while (readable(fd, ms)) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    ms = 50;
  }
  return out;
}

}  // namespace

TEST_CASE("pump copies a pipe verbatim when the destination is not a terminal") {
  Pipe src, dst;
  auto pump = pump_to(src, dst.w.get());
  const std::string msg = "x\x1b]0;t\x07y\n";
  REQUIRE(write(src.w.get(), msg.data(), msg.size()) == static_cast<ssize_t>(msg.size()));
  src.w.reset();
  REQUIRE(readable(pump->fd(), 2000));
  pump->on_ready();
  pump->finish(1000);
  CHECK(pump->done());
  CHECK(read_some(dst.r.get()) == msg);
  CHECK(pump->counters(0).bytes_out == msg.size());
  CHECK(pump->counters(0).removed == 0);
}

TEST_CASE("pump filters what goes to a terminal") {
  int master = -1, slave = -1;
  REQUIRE(openpty(&master, &slave, nullptr, nullptr, nullptr) == 0);
  UniqueFd m(master), s(slave);
  termios t{};
  REQUIRE(tcgetattr(slave, &t) == 0);
  cfmakeraw(&t);
  REQUIRE(tcsetattr(slave, TCSANOW, &t) == 0);
  Pipe src;
  auto pump = pump_to(src, slave);
  const std::string msg = "warn\x1b]0;pwned\x07 \x1b[2Jdone\n";
  REQUIRE(write(src.w.get(), msg.data(), msg.size()) == static_cast<ssize_t>(msg.size()));
  src.w.reset();
  pump->finish(1000);
  CHECK(read_some(master) == "warn done\n");
  CHECK(pump->counters(0).removed == msg.size() - 10);
}

TEST_CASE("pump stops reading while the destination is full, and resumes") {
  Pipe src, dst;
  REQUIRE(fcntl(dst.w.get(), F_SETPIPE_SZ, 4096) >= 0);
  REQUIRE(fcntl(src.w.get(), F_SETFL, O_NONBLOCK) == 0);
  auto pump = pump_to(src, dst.w.get(), 4096);
  // Write until the program side would block: that is back-pressure.
  std::string chunk(1024, 'z');
  size_t written = 0;
  for (int i = 0; i < 10000; ++i) {
    ssize_t n = write(src.w.get(), chunk.data(), chunk.size());
    if (n > 0) written += static_cast<size_t>(n);
    while (readable(pump->fd(), 0)) pump->on_ready();
    if (n < 0) break;
  }
  CHECK(written < size_t{1} << 20);  // the program was held back, nothing piled up here
  CHECK(pump->counters(0).stalls >= 1);
  CHECK(pump->counters(0).dropped == 0);
  // A reader drains the destination: everything arrives, in order.
  std::string got;
  std::thread reader([&] { got = read_some(dst.r.get(), 5000); });
  src.w.reset();
  pump->finish(5000);
  dst.w.reset();
  reader.join();
  CHECK(got.size() == written);
  CHECK(pump->counters(0).bytes_out == written);
}

TEST_CASE("pump drops, counted, when the destination's reader is gone") {
  Pipe src, dst;
  auto pump = pump_to(src, dst.w.get());
  dst.r.reset();
  std::string chunk(8192, 'q');
  for (int i = 0; i < 64; ++i) {  // 512 KiB: more than any pipe holds, so the pump must keep reading
    REQUIRE(write(src.w.get(), chunk.data(), chunk.size()) == 8192);
    while (readable(pump->fd(), 0)) pump->on_ready();
  }
  src.w.reset();
  pump->finish(1000);
  CHECK(pump->done());
  CHECK(pump->counters(0).dropped == 64 * 8192);
}

TEST_CASE("finish gives up on a destination that takes nothing") {
  Pipe src, dst;
  REQUIRE(fcntl(dst.w.get(), F_SETPIPE_SZ, 4096) >= 0);
  REQUIRE(fcntl(src.w.get(), F_SETFL, O_NONBLOCK) == 0);
  auto pump = pump_to(src, dst.w.get(), 4096);
  std::string chunk(4096, 'z');
  for (int i = 0; i < 64 && write(src.w.get(), chunk.data(), chunk.size()) > 0; ++i)
    while (readable(pump->fd(), 0)) pump->on_ready();
  src.w.reset();
  const auto t0 = std::chrono::steady_clock::now();
  pump->finish(300);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  CHECK(ms >= 250);
  CHECK(ms < 3000);
  CHECK(pump->counters(0).dropped > 0);
}
