#include "plan/ids.hpp"

#include <sstream>

namespace ik {
namespace {

// The identity map of the ids a namespace maps: each of its extents, seen
// from inside it (its `inner` ids), mapped to themselves.
std::vector<IdExtent> identity_of(const std::vector<IdExtent>& own) {
  std::vector<IdExtent> out;
  for (const auto& e : own) out.push_back({e.inner, e.inner, e.count});
  return out;
}

}  // namespace

std::vector<IdExtent> parse_id_map(const std::string& text) {
  std::vector<IdExtent> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    unsigned long long inner, outer, count;
    if (!(fields >> inner >> outer >> count) || count == 0 || inner > UINT32_MAX || outer > UINT32_MAX ||
        count > UINT32_MAX)
      continue;
    out.push_back({static_cast<std::uint32_t>(inner), static_cast<std::uint32_t>(outer),
                   static_cast<std::uint32_t>(count)});
  }
  return out;
}

IdMaps choose_id_maps(uid_t outer_uid, gid_t outer_gid, uid_t inner_uid, gid_t inner_gid, const MappableIds& host) {
  IdMaps maps;
  // Only when the ids stay the same inside: an identity map then changes
  // what set-up can reach, never who the program is.
  if (!host.uids.empty() && !host.gids.empty() && inner_uid == outer_uid && inner_gid == outer_gid) {
    maps.uid_map = identity_of(host.uids);
    maps.gid_map = identity_of(host.gids);
    maps.full = true;
    return maps;
  }
  maps.uid_map = {{static_cast<std::uint32_t>(inner_uid), static_cast<std::uint32_t>(outer_uid), 1}};
  maps.gid_map = {{static_cast<std::uint32_t>(inner_gid), static_cast<std::uint32_t>(outer_gid), 1}};
  return maps;
}

std::string id_map_text(const std::vector<IdExtent>& map) {
  std::string s;
  for (const auto& e : map)
    s += std::to_string(e.inner) + " " + std::to_string(e.outer) + " " + std::to_string(e.count) + "\n";
  return s;
}

}  // namespace ik
