#include "plan/ids.hpp"

#include <cstring>

namespace ik {
namespace {

// The identity map of the ids a namespace maps: each of its extents, seen
// from inside it (its `inner` ids), mapped to themselves.
std::vector<IdExtent> identity_of(const std::vector<IdExtent>& own) {
  std::vector<IdExtent> out;
  for (const auto& e : own) out.push_back({e.inner, e.inner, e.count});
  return out;
}

// One unsigned decimal number after optional blanks; false if there is none
// or it does not fit 32 bits.
bool read_id(const char*& p, const char* end, std::uint32_t& out) {
  while (p < end && (*p == ' ' || *p == '\t')) ++p;
  if (p == end || *p < '0' || *p > '9') return false;
  std::uint64_t v = 0;
  for (; p < end && *p >= '0' && *p <= '9'; ++p) {
    v = v * 10 + static_cast<std::uint64_t>(*p - '0');
    if (v > UINT32_MAX) return false;
  }
  out = static_cast<std::uint32_t>(v);
  return true;
}

}  // namespace

// A loop over the bytes, not istringstream: root's every start reads both
// maps, and a stream (its locale, its buffers) cost more than the reads.
std::vector<IdExtent> parse_id_map(const std::string& text) {
  std::vector<IdExtent> out;
  const char* p = text.data();
  const char* const end = p + text.size();
  while (p < end) {
    const char* eol = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
    if (!eol) eol = end;
    IdExtent e;
    const char* q = p;
    if (read_id(q, eol, e.inner) && read_id(q, eol, e.outer) && read_id(q, eol, e.count) && e.count != 0)
      out.push_back(e);
    p = eol + 1;
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
