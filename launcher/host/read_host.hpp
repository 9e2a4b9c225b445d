// The host reads that feed the planner, done once before planning: the
// caller's identity, HOME, logical cwd and environment, the ids it may map,
// its cgroup (host/cgroup_probe.hpp), and the real HostFs.
#pragma once
#include "common/error.hpp"
#include "plan/host.hpp"
#include "plan/ids.hpp"

namespace ik {

// Reads uid/gid, passwd entry, $HOME, logical cwd, the environment and our
// cgroup; `fs` is real_host_fs(). probe_cgroup=false leaves `cgroup` empty
// (see cgroup_probe_needed).
Result<HostInfo> read_host_info(char** envp, bool probe_cgroup = true);

// Reads our own user namespace's maps, but only when we are privileged in it
// (euid 0 with CAP_SETUID and CAP_SETGID effective). Cheap: nothing is read
// for an unprivileged caller.
MappableIds read_mappable_ids();

}  // namespace ik
