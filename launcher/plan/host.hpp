// Facts about the caller gathered once on the host, the planner's only
// input besides Options (so the planner can be tested with made-up hosts).
// Read by host/read_host.cpp; everything else the planner needs to know
// about the host's files goes through `fs`.
#pragma once
#include <sys/types.h>

#include <map>
#include <memory>
#include <string>

#include "common/host_fs.hpp"
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
  // The host's files and users as the planner may see them (lstat, realpath,
  // ~user): host/real_fs.hpp's real_host_fs(), or a MemoryFs in tests.
  // build_plan refuses to plan without one.
  std::shared_ptr<const HostFs> fs;
};

}  // namespace ik
