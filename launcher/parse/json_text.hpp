// Reading JSON files the user wrote (--config, kernel.json): errors say
// FILE:LINE:COLUMN and the parser's message, without the library's
// "[json.exception.parse_error.101]" prefix; a directory is named as one.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.hpp"

namespace ik {

// Parses `text` read from `path`; the error (exit status 2) reads
// "PATH:LINE:COLUMN: invalid JSON: MESSAGE".
Result<nlohmann::json> parse_json_text(const std::string& text, const std::string& path);
// JSON for people to read (--print-plan, show): host paths need not be
// UTF-8, and a strict dump() would throw on them; bytes that are not UTF-8
// become U+FFFD.
std::string display_json(const nlohmann::json& j, int indent = 2);

// Reads and parses `path`; `what` names the option for messages ("--config").
Result<nlohmann::json> read_json_file(const std::string& path, const std::string& what);

}  // namespace ik
