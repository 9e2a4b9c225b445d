// The list of syscalls the default filter denies outright: used by the rules
// (seccomp_rules.cpp), the log line and the tests. No libseccomp here, so the
// programs need not link it when the filter was compiled at build time.
#include "apply/seccomp.hpp"

namespace ik {

const std::vector<std::string>& denied_syscalls() {
  static const std::vector<std::string> kDenied = {
      // kernel keyring: not namespaced
      "keyctl", "add_key", "request_key",
      // kernel attack surface with a history of exploits
      "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
      // system administration
      "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff",
      "acct", "syslog", "quotactl", "lookup_dcookie", "uselib", "vhangup", "nfsservctl",
      // escaping the file view: handles bypass mount boundaries; no new mounts after set-up
      "open_by_handle_at", "name_to_handle_at", "mount", "umount", "umount2", "pivot_root", "chroot", "fsopen",
      "fsmount", "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr", "setns"};
  return kDenied;
}

}  // namespace ik
