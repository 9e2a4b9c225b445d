#include "parse/json_text.hpp"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

namespace ik {
using nlohmann::json;

namespace {

// "[json.exception.parse_error.101] parse error at line 3, column 7: syntax
// error while parsing object key - ..." -> "syntax error while parsing ...".
std::string strip_library_prefix(const std::string& what) {
  std::string s = what;
  if (!s.empty() && s[0] == '[') {
    auto close = s.find("] ");
    if (close != std::string::npos) s = s.substr(close + 2);
  }
  auto colon = s.find(": ");
  if (s.rfind("parse error", 0) == 0 && colon != std::string::npos) s = s.substr(colon + 2);
  return s;
}

// Line and column (1-based) of byte offset `pos`, as an editor counts them.
std::pair<size_t, size_t> line_column(const std::string& text, size_t pos) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < pos && i < text.size(); ++i) {
    if (text[i] == '\n') ++line, col = 1;
    else ++col;
  }
  return {line, col};
}

}  // namespace

Result<json> parse_json_text(const std::string& text, const std::string& path) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    // e.byte is the 1-based position of the offending byte (past the end
    // for "unexpected end of input").
    auto [line, col] = line_column(text, e.byte > 0 ? e.byte - 1 : 0);
    return usage_error(path + ":" + std::to_string(line) + ":" + std::to_string(col) +
                       ": invalid JSON: " + strip_library_prefix(e.what()));
  } catch (const json::exception& e) {
    return usage_error(path + ": invalid JSON: " + strip_library_prefix(e.what()));
  }
}

std::string display_json(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

Result<json> read_json_file(const std::string& path, const std::string& what) {
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    return usage_error(what + " " + path + ": is a directory", "give the path of a JSON file");
  std::ifstream in(path);
  if (!in) return Error{what + " " + path, errno, {}, "check the path", kExitUsage};
  std::stringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return Error{what + " " + path, errno, "cannot read", {}, kExitUsage};
  return parse_json_text(buf.str(), path);
}

}  // namespace ik
