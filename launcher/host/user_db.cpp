#include "host/user_db.hpp"

#include <grp.h>
#include <pwd.h>

#include <cstring>

#include "common/file_io.hpp"

namespace ik {
namespace {

bool is_blank(char c) { return c == ' ' || c == '\t'; }

// The part of a line before any '#' comment.
std::string_view uncommented(std::string_view line) { return line.substr(0, line.find('#')); }

// Splits at blanks.
std::string_view next_word(std::string_view& s) {
  size_t b = 0;
  while (b < s.size() && is_blank(s[b])) ++b;
  size_t e = b;
  while (e < s.size() && !is_blank(s[e])) ++e;
  std::string_view w = s.substr(b, e - b);
  s.remove_prefix(e);
  return w;
}

bool all_digits(std::string_view s) {
  if (s.empty() || s.size() > 10) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// nsswitch.conf, read once and shared by both lookups.
const std::string& nsswitch_text(bool& ok) {
  static bool read_ok = false;
  static const std::string text = read_small_file_or_empty("/etc/nsswitch.conf", &read_ok, 64 << 10);
  ok = read_ok;
  return text;
}

bool files_first(const char* db) {
  bool ok = false;
  const std::string& text = nsswitch_text(ok);
  return ok && files_answer_first(text, db);
}

}  // namespace

bool files_answer_first(const std::string& nsswitch, const std::string& db) {
  std::string_view all(nsswitch);
  int lines = 0;
  bool first_is_files = false;
  while (!all.empty()) {
    size_t nl = all.find('\n');
    std::string_view line = uncommented(all.substr(0, nl));
    all.remove_prefix(nl == std::string_view::npos ? all.size() : nl + 1);
    size_t b = 0;
    while (b < line.size() && is_blank(line[b])) ++b;
    line.remove_prefix(b);
    if (line.compare(0, db.size(), db) != 0) continue;
    std::string_view rest = line.substr(db.size());
    while (!rest.empty() && is_blank(rest[0])) rest.remove_prefix(1);
    if (rest.empty() || rest[0] != ':') continue;
    rest.remove_prefix(1);
    ++lines;
    std::string_view first = next_word(rest);
    std::string_view second = next_word(rest);
    // "files" then nothing or another service: NSS returns what files finds.
    // An action word ("[SUCCESS=continue]") may change that: not ours to judge.
    first_is_files = first == "files" && (second.empty() || second[0] != '[');
  }
  return lines == 1 && first_is_files;
}

std::optional<ColonLine> find_colon_line(const std::string& text, unsigned long id, int nfields) {
  std::string_view all(text);
  ColonLine out;
  while (!all.empty()) {
    size_t nl = all.find('\n');
    std::string_view line = all.substr(0, nl);
    all.remove_prefix(nl == std::string_view::npos ? all.size() : nl + 1);
    size_t b = 0;
    while (b < line.size() && (is_blank(line[b]) || line[b] == '\r')) ++b;
    // NSS's files backend skips blank lines and comments.
    if (b == line.size() || line[b] == '#') continue;
    if (b != 0 || line[0] == '+' || line[0] == '-') return std::nullopt;
    std::string_view f[7];
    int n = 0;
    for (std::string_view rest = line;; ++n) {
      size_t colon = rest.find(':');
      if (n == nfields - 1) {  // the last field runs to the end of the line
        if (colon != std::string_view::npos) return std::nullopt;
        f[n++] = rest;
        break;
      }
      if (colon == std::string_view::npos) return std::nullopt;
      f[n] = rest.substr(0, colon);
      rest.remove_prefix(colon + 1);
    }
    if (f[0].empty() || !all_digits(f[2])) return std::nullopt;
    if (std::strtoul(std::string(f[2]).c_str(), nullptr, 10) != id) continue;
    out.found = true;
    for (int i = 0; i < nfields; ++i) out.fields[i] = std::string(f[i]);
    return out;
  }
  return out;
}

std::optional<UserEntry> lookup_user(uid_t uid) {
  if (files_first("passwd")) {
    bool ok = false;
    std::string text = read_small_file_or_empty("/etc/passwd", &ok);
    if (ok) {
      if (auto line = find_colon_line(text, uid, 7); line && line->found)
        return UserEntry{line->fields[0], line->fields[5], line->fields[6]};
    }
  }
  if (const passwd* pw = getpwuid(uid)) return UserEntry{pw->pw_name, pw->pw_dir, pw->pw_shell};
  return std::nullopt;
}

std::optional<std::string> lookup_group_name(gid_t gid) {
  if (files_first("group")) {
    bool ok = false;
    std::string text = read_small_file_or_empty("/etc/group", &ok);
    if (ok) {
      if (auto line = find_colon_line(text, gid, 4); line && line->found) return line->fields[0];
    }
  }
  if (const group* gr = getgrgid(gid)) return std::string(gr->gr_name);
  return std::nullopt;
}

}  // namespace ik
