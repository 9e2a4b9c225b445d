// The HostFs that asks the real system (lstat, stat, readlink, realpath,
// getpwnam). Stateless: one shared instance.
#pragma once
#include <memory>

#include "common/host_fs.hpp"

namespace ik {

std::shared_ptr<const HostFs> real_host_fs();

}  // namespace ik
