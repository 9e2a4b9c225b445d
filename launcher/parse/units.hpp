// Human units on the command line and in configs: sizes ("512M", "2G") and
// durations ("90", "90s", "10m", "1h").
#pragma once
#include <cstdint>
#include <string>

#include "common/error.hpp"

namespace ik {

Result<std::uint64_t> parse_size(const std::string& text, const std::string& what);
// The other way, for messages and listings: 4294967296 -> "4G", 1536 ->
// "1536" (the largest exact unit), so a size reads as the user wrote it.
std::string format_size(std::uint64_t bytes);
Result<std::uint64_t> parse_seconds(const std::string& text, const std::string& what);
Result<std::uint64_t> parse_count(const std::string& text, const std::string& what);

}  // namespace ik
