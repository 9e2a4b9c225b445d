// Mount namespace: builds the new root from the plan's ops and switches to
// it with pivot_root. Runs in the sandbox's PID 1 while it still holds every
// capability of the new user namespace.
#pragma once
#include "common/error.hpp"
#include "plan/plan.hpp"

namespace ik {

// Everything from "make / private" to "old root detached". Afterwards the
// process's root and cwd are the new root.
Status build_root_and_pivot(const Plan& plan);

// Mount attributes we add on top of whatever a mount already has.
enum MountAttr : unsigned { kAttrReadOnly = 1, kAttrNoSuid = 2, kAttrNoDev = 4 };

// Adds `attrs` to the mount at `path` (and every mount below it when
// `recursive`). Only adds: the flags the kernel locked on mounts inherited
// from the host (noexec, ro, atime...) stay, so this cannot fail with EPERM
// the way a plain MS_REMOUNT that forgets a locked flag does.
Status add_mount_attrs(const std::string& path, unsigned attrs, bool recursive);

}  // namespace ik
