// The mount-list grammar shared with isolate.sh:
//   LIST  := ENTRY (' ' ENTRY)*
//   ENTRY := [FLAGS ':'] PATH | [FLAGS ':'] DEST '=' SRC | DEST '=none'
//   FLAGS := FLAG (',' FLAG)*   FLAG := ro | rw | rbind
#pragma once
#include <string>
#include <vector>

#include "common/error.hpp"
#include "parse/options.hpp"

namespace ik {

Result<MountEntry> parse_mount_entry(const std::string& text);
Result<std::vector<MountEntry>> parse_mount_list(const std::string& list);

// "foo" for "foo:bar:/x" and "ro,foo:/x": the first word that is not a
// flag when the part before the first ':' looks like a flag list (lowercase
// words and commas). Such an entry is read as a path; when that path does
// not exist, the error names the word instead. Empty otherwise.
std::string unknown_mount_flag(const std::string& text);

}  // namespace ik
