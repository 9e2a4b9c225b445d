#include "relay/jupyter_header.hpp"

namespace ik::relay {
namespace {

bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t skip_space(std::string_view s, size_t i) {
  while (i < s.size() && is_json_space(s[i])) ++i;
  return i;
}

}  // namespace

bool header_msg_type_is(std::string_view header, std::string_view type) {
  static constexpr std::string_view kKey = "\"msg_type\"";
  // Python's json.dumps writes `"msg_type": "x"`, other kernels `"msg_type":"x"`.
  for (size_t at = header.find(kKey); at != std::string_view::npos; at = header.find(kKey, at + 1)) {
    size_t i = skip_space(header, at + kKey.size());
    if (i >= header.size() || header[i] != ':') continue;
    i = skip_space(header, i + 1);
    if (i >= header.size() || header[i] != '"') continue;
    const std::string_view rest = header.substr(i + 1);
    if (rest.size() > type.size() && rest.substr(0, type.size()) == type && rest[type.size()] == '"') return true;
  }
  return false;
}

}  // namespace ik::relay
