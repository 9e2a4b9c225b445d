#include "parse/mount_list.hpp"

#include <sstream>

namespace ik {
namespace {

// Splits "ro,rbind:/x" into flags and rest. A prefix counts as flags only when
// every comma-separated word is a known flag, so "/a:b" stays a path.
bool split_flags(const std::string& text, MountEntry& e, std::string& rest) {
  auto colon = text.find(':');
  if (colon == std::string::npos) {
    rest = text;
    return true;
  }
  std::string prefix = text.substr(0, colon);
  MountEntry tmp = e;
  std::stringstream ss(prefix);
  std::string flag;
  bool any = false;
  while (std::getline(ss, flag, ',')) {
    any = true;
    if (flag == "ro") tmp.readonly = true;
    else if (flag == "rw") tmp.readonly = false;
    else if (flag == "rbind") tmp.rbind = true;
    else {
      rest = text;  // not a flag list: the colon belongs to the path
      return false;
    }
  }
  if (!any) {
    rest = text;
    return false;
  }
  e = tmp;
  rest = text.substr(colon + 1);
  return true;
}

}  // namespace

Result<MountEntry> parse_mount_entry(const std::string& text) {
  MountEntry e;
  e.text = text;
  std::string rest;
  split_flags(text, e, rest);
  if (rest.empty())
    return usage_error("mount entry '" + text + "': empty path", "write [ro|rw|rbind:]PATH, DEST=SRC or DEST=none");
  auto eq = rest.find('=');
  if (eq == std::string::npos) {
    e.dest = rest;
    return e;
  }
  e.dest = rest.substr(0, eq);
  e.src = rest.substr(eq + 1);
  if (e.dest.empty() || e.src.empty())
    return usage_error("mount entry '" + text + "': DEST=SRC needs both sides",
                       "e.g. /data=~/course/data or /data=none");
  if (e.src == "none") {
    e.none = true;
    e.src.clear();
  }
  return e;
}

std::string unknown_mount_flag(const std::string& text) {
  auto colon = text.find(':');
  if (colon == std::string::npos || colon == 0) return {};
  std::stringstream ss(text.substr(0, colon));
  std::string word, unknown;
  while (std::getline(ss, word, ',')) {
    if (word.empty()) return {};
    for (char c : word)
      if (c < 'a' || c > 'z') return {};
    if (unknown.empty() && word != "ro" && word != "rw" && word != "rbind") unknown = word;
  }
  return unknown;
}

Result<std::vector<MountEntry>> parse_mount_list(const std::string& list) {
  std::vector<MountEntry> out;
  std::stringstream ss(list);
  std::string word;
  while (ss >> word) {
    auto e = parse_mount_entry(word);
    if (!e) return e.error();
    out.push_back(std::move(*e));
  }
  return out;
}

}  // namespace ik
