#include "apply/seccomp.hpp"

#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.hpp"

namespace ik {
namespace {

#ifdef IK_PRECOMPILED_SECCOMP
// kSeccompDefault, kSeccompAllowUserns: written by ik-seccomp-gen.
#include "seccomp_bpf.inc"
#endif

}  // namespace

std::span<const sock_filter> precompiled_seccomp_filter(const SeccompPolicy& policy) {
#ifdef IK_PRECOMPILED_SECCOMP
  if (policy.allow_userns) return kSeccompAllowUserns;
  return kSeccompDefault;
#else
  (void)policy;
  return {};
#endif
}

Status load_seccomp_filter(const SeccompPolicy& policy) {
  const auto prog = precompiled_seccomp_filter(policy);
  if (prog.empty()) {
#ifndef IK_PRECOMPILED_SECCOMP  // else never empty, and the programs need no libseccomp at all
    IK_TRY(load_seccomp_filter_libseccomp(policy));
#endif
  } else {
    // What seccomp_load() does with libseccomp's default attributes:
    // no_new_privs, then the program, without flags (no TSYNC: the caller
    // is single-threaded by now).
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return sys_error("seccomp: prctl(PR_SET_NO_NEW_PRIVS)");
    sock_fprog fprog{static_cast<unsigned short>(prog.size()), const_cast<sock_filter*>(prog.data())};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0)
      return sys_error("seccomp: load filter", errno, "try --seccomp=off to debug");
  }
  log::step("seccomp: default filter loaded (%zu syscalls denied, TIOCSTI/TIOCLINUX, %s)", denied_syscalls().size(),
            policy.allow_userns ? "user namespaces allowed" : "no new user namespaces");
  return ok();
}

}  // namespace ik
