// The default syscall filter: denies, with EPERM so programs can fall back,
// what namespaces do not cover. Loaded after every set-up step. Its rules
// are written with libseccomp (seccomp_rules.cpp) and compiled to BPF at
// build time (ik-seccomp-gen), so a start only hands the kernel the program.
#pragma once
#include <linux/filter.h>

#include <span>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace ik {

struct SeccompPolicy {
  bool allow_userns = false;
};

// The names of the syscalls the default filter denies outright.
const std::vector<std::string>& denied_syscalls();

// The filter for `policy` compiled by libseccomp, as BPF (seccomp_rules.cpp).
Result<std::vector<sock_filter>> compile_seccomp_filter(const SeccompPolicy& policy);

// The same, compiled at build time; empty when the build could not run
// libseccomp (cross-compiling), in which case it is compiled at start.
std::span<const sock_filter> precompiled_seccomp_filter(const SeccompPolicy& policy);

// Loads the filter into the calling thread (sets no_new_privs first).
Status load_seccomp_filter(const SeccompPolicy& policy);

// Compiles and loads it with libseccomp at run time (seccomp_rules.cpp).
Status load_seccomp_filter_libseccomp(const SeccompPolicy& policy);

}  // namespace ik
