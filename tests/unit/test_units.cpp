// Sizes, durations and counts (parse/units).
#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "parse/units.hpp"

using ik::parse_count;
using ik::parse_seconds;
using ik::parse_size;

namespace {

std::uint64_t size_of(const std::string& text) {
  auto r = parse_size(text, "--memory");
  REQUIRE_MESSAGE(r.ok(), text << ": " << (r.ok() ? std::string() : r.error().describe()));
  return *r;
}

std::uint64_t seconds_of(const std::string& text) {
  auto r = parse_seconds(text, "--cpu-time");
  REQUIRE_MESSAGE(r.ok(), text << ": " << (r.ok() ? std::string() : r.error().describe()));
  return *r;
}

constexpr std::uint64_t kK = 1ull << 10, kM = 1ull << 20, kG = 1ull << 30, kT = 1ull << 40;

}  // namespace

TEST_CASE("sizes: plain numbers are bytes") {
  CHECK(size_of("0") == 0);
  CHECK(size_of("1") == 1);
  CHECK(size_of("4096") == 4096);
  CHECK(size_of("100B") == 100);
  CHECK(size_of("100b") == 100);
}

TEST_CASE("sizes: K, M, G, T (binary, case-insensitive)") {
  CHECK(size_of("1K") == kK);
  CHECK(size_of("1k") == kK);
  CHECK(size_of("512M") == 512 * kM);
  CHECK(size_of("512m") == 512 * kM);
  CHECK(size_of("2G") == 2 * kG);
  CHECK(size_of("2g") == 2 * kG);
  CHECK(size_of("3T") == 3 * kT);
  CHECK(size_of("3t") == 3 * kT);
}

TEST_CASE("sizes: KiB/MiB and KB/MB suffixes") {
  CHECK(size_of("1KiB") == kK);
  CHECK(size_of("1kib") == kK);
  CHECK(size_of("256MiB") == 256 * kM);
  CHECK(size_of("1GiB") == kG);
  CHECK(size_of("1TiB") == kT);
  CHECK(size_of("1KB") == kK);
  CHECK(size_of("256MB") == 256 * kM);
  CHECK(size_of("1mb") == kM);
  CHECK(size_of("2GB") == 2 * kG);
  CHECK(size_of("1TB") == kT);
}

TEST_CASE("sizes: the largest values and overflow") {
  CHECK(size_of("18446744073709551615") == UINT64_MAX);
  CHECK(size_of("16777215T") == 16777215ull * kT);
  CHECK(size_of("17179869183G") == 17179869183ull * kG);

  for (const std::string big :
       {"16777216T", "17179869184G", "18446744073709551616", "99999999999999999999999", "18446744073709551615K"}) {
    CAPTURE(big);
    auto r = parse_size(big, "--memory");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().exit_code == ik::kExitUsage);
    CHECK(r.error().describe().find("--memory") != std::string::npos);
    CHECK(r.error().describe().find(big) != std::string::npos);
  }
  auto r = parse_size("16777216T", "--memory");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().describe().find("too large") != std::string::npos);
}

TEST_CASE("sizes: bad values and unknown units") {
  for (const std::string bad :
       {"", "M", "abc", "-1", "+1", " 1", "1 M", "1.5G", "1X", "1KK", "1P", "1GG", "1Gb2", "1Kbit", "1e6"}) {
    CAPTURE(bad);
    auto r = parse_size(bad, "--tmpfs-size");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().exit_code == ik::kExitUsage);
    CHECK(r.error().describe().find("--tmpfs-size") != std::string::npos);
  }
  auto r = parse_size("5X", "--fsize");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().describe().find("unknown unit") != std::string::npos);
  CHECK(r.error().describe().find("'5X'") != std::string::npos);
}

TEST_CASE("sizes: a suffix without a unit letter is not a size") {
  // "iB" alone names no unit; it must not be read as bytes.
  for (const std::string bad : {"5iB", "5ib", "5BB", "5bib"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_size(bad, "--memory").ok());
  }
}

TEST_CASE("durations: seconds, s, m, h") {
  CHECK(seconds_of("0") == 0);
  CHECK(seconds_of("90") == 90);
  CHECK(seconds_of("90s") == 90);
  CHECK(seconds_of("10m") == 600);
  CHECK(seconds_of("1h") == 3600);
  CHECK(seconds_of("24h") == 86400);
  CHECK(seconds_of("18446744073709551615") == UINT64_MAX);
  CHECK(seconds_of("18446744073709551615s") == UINT64_MAX);
}

TEST_CASE("durations: overflow") {
  for (const std::string big : {"307445734561825861m", "5124095576030432h", "18446744073709551616"}) {
    CAPTURE(big);
    auto r = parse_seconds(big, "--wall-time");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().exit_code == ik::kExitUsage);
    CHECK(r.error().describe().find("--wall-time") != std::string::npos);
  }
  CHECK(seconds_of("307445734561825860m") == 307445734561825860ull * 60);
  CHECK(seconds_of("5124095576030431h") == 5124095576030431ull * 3600);
}

TEST_CASE("durations: bad values and unknown units") {
  for (const std::string bad : {"", "s", "m", "abc", "-5", "1.5h", "10ms", "10min", "1d", "10 s", "5sec", "1hm"}) {
    CAPTURE(bad);
    auto r = parse_seconds(bad, "--cpu-time");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().exit_code == ik::kExitUsage);
    CHECK(r.error().describe().find("--cpu-time") != std::string::npos);
  }
  auto r = parse_seconds("3d", "--cpu-time");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().describe().find("unknown unit") != std::string::npos);
}

TEST_CASE("counts: whole numbers only") {
  auto r = parse_count("100", "--nproc");
  REQUIRE(r.ok());
  CHECK(*r == 100);
  auto r0 = parse_count("0", "--nproc");
  REQUIRE(r0.ok());
  CHECK(*r0 == 0);
  auto rmax = parse_count("18446744073709551615", "--nofile");
  REQUIRE(rmax.ok());
  CHECK(*rmax == UINT64_MAX);
  for (const std::string bad : {"", "1K", "10s", "-1", "1.0", "abc", "18446744073709551616", " 1", "1 "}) {
    CAPTURE(bad);
    auto b = parse_count(bad, "--nofile");
    REQUIRE_FALSE(b.ok());
    CHECK(b.error().exit_code == ik::kExitUsage);
    CHECK(b.error().describe().find("--nofile") != std::string::npos);
  }
}
