// The default syscall filter (libseccomp): denies, with EPERM so programs can
// fall back, what namespaces do not cover. Loaded after every set-up step.
#pragma once
#include <string>
#include <vector>

#include "common/error.hpp"

namespace ik {

struct SeccompPolicy {
  bool allow_userns = false;
};

// The names of the syscalls the default filter denies outright.
const std::vector<std::string>& denied_syscalls();

// Builds and loads the filter into the calling thread (needs no_new_privs).
Status load_seccomp_filter(const SeccompPolicy& policy);

}  // namespace ik
