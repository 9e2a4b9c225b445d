// Facts about the caller gathered once on the host, the planner's only
// input besides Options (so the planner can be tested with made-up hosts).
#pragma once
#include <sys/types.h>

#include <map>
#include <string>

#include "common/error.hpp"
#include "plan/cgroup.hpp"
#include "plan/ids.hpp"

namespace ik {

struct HostInfo {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string user;
  std::string group;
  std::string home;
  std::string shell;
  std::string cwd;  // logical: $PWD when it names the current directory
  std::map<std::string, std::string> env;
  MappableIds ids;    // what we may map besides our own ids (root only)
  CgroupHost cgroup;  // our cgroup v2 and what it offers (default: none, so rlimits)
};

// Reads uid/gid, passwd entry, $HOME, logical cwd, the environment and our cgroup.
// probe_cgroup=false leaves `cgroup` empty (see cgroup_probe_needed).
Result<HostInfo> read_host_info(char** envp, bool probe_cgroup = true);

}  // namespace ik
