// Copies a host file's bytes into a file set-up is creating: the curated
// /etc files the planner chose to copy rather than bind (MountOp::src of a
// kFile).
#pragma once
#include <string>

#include "common/error.hpp"

namespace ik {

// Appends the whole of the regular file `from` to the open file `to_fd`, in
// the kernel (sendfile). Never through a symlink at `from` (the planner gave
// a resolved path) and never blocks on a FIFO put there since: anything but a
// regular file, or one over 1 MiB, is an error naming `shown_as`.
Status copy_file_into(const std::string& from, int to_fd, const std::string& shown_as);

}  // namespace ik
