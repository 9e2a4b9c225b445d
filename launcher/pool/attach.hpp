// Attaches the launch-time ops (the working directory, the connection file
// and the tmpfs hiding its directory) to a waiting sandbox. Run by the pool
// daemon, which owns the user namespace the sandbox's was created from.
#pragma once
#include <sys/types.h>

#include <vector>

#include "common/error.hpp"
#include "plan/plan.hpp"

namespace ik::pool {

// Forks a single-threaded child that clones each bind source in our mount
// namespace (open_tree OPEN_TREE_CLONE), enters the sandbox's user then
// mount namespace (setns through /proc/<init_pid>/ns), creates the mount
// points and attaches the ops in order. The kernel never gets a descriptor
// of a host directory: only mounts cross over. `tmpfs_size`, `inner_uid`,
// `inner_gid`: as the cold plan's. `launch_umask`: the claiming launcher's,
// which a cold start creates the mount points with.
Status attach_launch_ops(pid_t init_pid, const std::vector<MountOp>& ops, unsigned long long tmpfs_size,
                         uid_t inner_uid, gid_t inner_gid, unsigned launch_umask);

}  // namespace ik::pool
