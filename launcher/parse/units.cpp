#include "parse/units.hpp"

#include <cctype>
#include <limits>

namespace ik {
namespace {

// Reads the leading decimal integer; returns false on overflow or no digits.
bool leading_number(const std::string& s, std::uint64_t& value, size_t& pos) {
  value = 0;
  pos = 0;
  while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
    std::uint64_t d = static_cast<std::uint64_t>(s[pos] - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return false;
    value = value * 10 + d;
    ++pos;
  }
  return pos > 0;
}

Result<std::uint64_t> scaled(std::uint64_t v, std::uint64_t mul, const std::string& text, const std::string& what) {
  if (mul != 0 && v > std::numeric_limits<std::uint64_t>::max() / mul)
    return usage_error(what + ": '" + text + "' is too large");
  return v * mul;
}

}  // namespace

Result<std::uint64_t> parse_size(const std::string& text, const std::string& what) {
  std::uint64_t v;
  size_t pos;
  if (!leading_number(text, v, pos))
    return usage_error(what + ": '" + text + "' is not a size", "use a number with K, M, G or T, e.g. 512M");
  std::string unit = text.substr(pos);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  // Accepted spellings: "", B, and K/M/G/T alone or followed by B or IB.
  static const struct {
    const char* letter;
    std::uint64_t mul;
  } kUnits[] = {{"K", 1ull << 10}, {"M", 1ull << 20}, {"G", 1ull << 30}, {"T", 1ull << 40}};
  if (unit.empty() || unit == "B") return v;
  for (const auto& u : kUnits) {
    const std::string l = u.letter;
    if (unit == l || unit == l + "B" || unit == l + "IB") return scaled(v, u.mul, text, what);
  }
  return usage_error(what + ": unknown unit in '" + text + "'", "use K, M, G or T, e.g. 512M");
}

Result<std::uint64_t> parse_seconds(const std::string& text, const std::string& what) {
  std::uint64_t v;
  size_t pos;
  if (!leading_number(text, v, pos))
    return usage_error(what + ": '" + text + "' is not a duration",
                       "use seconds, or a number with s, m or h, e.g. 90s");
  std::string unit = text.substr(pos);
  if (unit.empty() || unit == "s") return v;
  if (unit == "m") return scaled(v, 60, text, what);
  if (unit == "h") return scaled(v, 3600, text, what);
  return usage_error(what + ": unknown unit in '" + text + "'", "use s, m or h, e.g. 10m");
}

Result<std::uint64_t> parse_count(const std::string& text, const std::string& what) {
  std::uint64_t v;
  size_t pos;
  if (!leading_number(text, v, pos) || pos != text.size())
    return usage_error(what + ": '" + text + "' is not a whole number");
  return v;
}

std::string format_size(std::uint64_t bytes) {
  const char* units = "KMGT";
  int u = -1;
  while (u < 3 && bytes >= 1024 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++u;
  }
  return std::to_string(bytes) + (u >= 0 ? std::string(1, units[u]) : std::string());
}

}  // namespace ik
