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

}  // namespace ik
