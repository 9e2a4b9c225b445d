#include "host/cgroup_probe.hpp"

#include <unistd.h>

#include <cerrno>
#include <sstream>

#include "common/file_io.hpp"

namespace ik {
namespace {
// Big enough for hosts with thousands of mounts or processes.
constexpr size_t kListMax = 64 << 20;
}  // namespace

CgroupHost probe_cgroup_host() {
  CgroupHost h;
  h.self_pid = getpid();
  auto mounts = parse_mountinfo_cgroups(read_small_file_or_empty("/proc/self/mountinfo", nullptr, kListMax));
  for (const auto& m : mounts)
    if (!m.v2)
      for (const auto& c : m.controllers) h.v1.emplace(c, m.mount_point);
  auto path = parse_proc_cgroup_v2(read_small_file_or_empty("/proc/self/cgroup"));
  if (!path) {
    h.problem = "no cgroup v2 entry (0::) in /proc/self/cgroup";
    return h;
  }
  if (path->rfind("/..", 0) == 0) {
    h.problem = "our cgroup " + *path + " is outside our cgroup namespace";
    return h;
  }
  h.path = *path;
  auto where = locate_cgroup_dir(mounts, h.path);
  if (!where) {
    h.problem = "cgroup v2 is not mounted (no cgroup2 file system in /proc/self/mountinfo)";
    return h;
  }
  h.mount = where->first.mount_point;
  h.dir = where->second;
  bool readable = false;
  h.controllers = parse_controller_list(read_small_file_or_empty(h.dir + "/cgroup.controllers", &readable));
  if (!readable) {
    h.problem = "cannot read " + h.dir + "/cgroup.controllers";
    return h;
  }
  h.v2 = true;
  h.subtree_control = parse_controller_list(read_small_file_or_empty(h.dir + "/cgroup.subtree_control"));
  // Only non-root cgroups have cgroup.type. Inside a cgroup namespace "/" is
  // some cgroup of the host, bound by the no-internal-processes rule.
  h.is_root = access((h.dir + "/cgroup.type").c_str(), F_OK) != 0 && errno == ENOENT;
  // access() also reports EROFS: a read-only cgroup mount (containers) is not writable.
  h.writable = access(h.dir.c_str(), W_OK | X_OK) == 0 && access((h.dir + "/cgroup.procs").c_str(), W_OK) == 0 &&
               access((h.dir + "/cgroup.subtree_control").c_str(), W_OK) == 0;
  if (!h.is_root) {
    std::istringstream procs(read_small_file_or_empty(h.dir + "/cgroup.procs", nullptr, kListMax));
    std::string line;
    h.other_processes = false;
    while (std::getline(procs, line))
      if (!line.empty() && line != std::to_string(h.self_pid)) {
        h.other_processes = true;
        break;
      }
  }
  return h;
}

}  // namespace ik
