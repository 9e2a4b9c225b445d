// The sandbox's uid/gid maps: which ids of the caller's user namespace the
// sandbox's user namespace maps, decided on the host before clone() so that
// --print-plan shows them and the planner's tests can pin them.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ik {

// One line of /proc/PID/{uid,gid}_map: ids inner..inner+count-1 inside are
// outer..outer+count-1 in the parent namespace.
struct IdExtent {
  std::uint32_t inner = 0;
  std::uint32_t outer = 0;
  std::uint32_t count = 1;
  bool operator==(const IdExtent&) const = default;
};

// What the caller may map: for a caller holding CAP_SETUID and CAP_SETGID in
// its own user namespace (root), every id that namespace maps; empty
// otherwise (an unprivileged caller may map its own uid and gid only).
struct MappableIds {
  std::vector<IdExtent> uids, gids;
};

// Parses the text of a uid_map/gid_map; malformed lines are skipped.
std::vector<IdExtent> parse_id_map(const std::string& text);

// host/read_host.hpp reads them (read_mappable_ids).

// The maps the sandbox gets. A privileged caller (root) keeping its own
// identity inside gets every id of its namespace mapped to itself, so that
// set-up can reach whatever root can (a directory of another user with mode
// 0700 is searched with CAP_DAC_OVERRIDE only when its owner is mapped); the
// program still runs as root with no capability at all. Anyone else: one
// line, inner -> outer.
struct IdMaps {
  std::vector<IdExtent> uid_map, gid_map;
  bool full = false;  // the identity map of the caller's namespace
};
IdMaps choose_id_maps(uid_t outer_uid, gid_t outer_gid, uid_t inner_uid, gid_t inner_gid, const MappableIds& host);

// "0 0 4294967295\n" lines for a map file.
std::string id_map_text(const std::vector<IdExtent>& map);

}  // namespace ik
