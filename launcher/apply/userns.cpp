#include "apply/userns.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "common/fd.hpp"
#include "common/log.hpp"

namespace ik {
namespace {

Status write_proc_file(pid_t pid, const char* name, const std::string& content) {
  std::string path = "/proc/" + std::to_string(pid) + "/" + name;
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return sys_error("open " + path);
  // Each map file takes exactly one write().
  if (write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    std::string shown = content.substr(0, content.size() - 1);
    for (auto& c : shown)
      if (c == '\n') c = ',';
    return sys_error("write " + path + " ('" + shown + "')");
  }
  return ok();
}

}  // namespace

Status write_id_maps(pid_t child, const Identity& id) {
  // setgroups must be "deny" before an unprivileged gid_map write, and can
  // not be changed after it. Root's full map would not need it; it stays
  // "deny" anyway, so nothing inside can ever drop a group (whose absence a
  // negative group permission would turn into access).
  IK_TRY(write_proc_file(child, "setgroups", "deny\n"));
  // The plan's maps (plan/ids.cpp): one line inner -> outer, or for root
  // the identity map of every id of its namespace, which lets set-up reach
  // another user's 0700 tree as root can (capabilities in a user namespace
  // apply only to inodes whose owner is mapped in it). Each file takes
  // exactly one write().
  IdMaps single = choose_id_maps(id.outer_uid, id.outer_gid, id.inner_uid, id.inner_gid, {});
  const IdMaps& maps = id.maps.uid_map.empty() || id.maps.gid_map.empty() ? single : id.maps;
  IK_TRY(write_proc_file(child, "gid_map", id_map_text(maps.gid_map)));
  IK_TRY(write_proc_file(child, "uid_map", id_map_text(maps.uid_map)));
  log::step("user namespace: uid %u -> %u, gid %u -> %u%s (setgroups deny)", id.outer_uid, id.inner_uid, id.outer_gid,
            id.inner_gid, maps.full ? ", every other id of ours mapped to itself" : "");
  return ok();
}

bool running_in_container() {
  if (access("/.dockerenv", F_OK) == 0 || access("/run/.containerenv", F_OK) == 0) return true;
  std::ifstream in("/proc/1/environ");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str().find("container=") != std::string::npos;
}

Error diagnose_namespace_failure(int err, const SysctlReader& sysctl, bool in_container) {
  Error e = sys_error("create namespaces (clone)", err);
  if (sysctl("kernel/unprivileged_userns_clone") == "0") {
    e.hint = "unprivileged user namespaces are disabled: run 'sudo sysctl -w kernel.unprivileged_userns_clone=1' "
             "(persist it in /etc/sysctl.d/)";
  } else if (sysctl("user/max_user_namespaces") == "0") {
    e.hint = "user.max_user_namespaces is 0: run 'sudo sysctl -w user.max_user_namespaces=15000'";
  } else if (sysctl("kernel/apparmor_restrict_unprivileged_userns") == "1") {
    e.hint = "AppArmor restricts unprivileged user namespaces: run 'sudo sysctl -w "
             "kernel.apparmor_restrict_unprivileged_userns=0' or add an AppArmor profile with 'userns,' "
             "for this program";
  } else if (err == ENOSPC) {
    e.hint = "a namespace limit is reached (user.max_user_namespaces, or nesting deeper than 32): "
             "raise it with 'sudo sysctl -w user.max_user_namespaces=15000'";
  } else if (err == EINVAL) {
    e.hint = "this kernel lacks user namespace support (CONFIG_USER_NS)";
  } else if (in_container && err == EPERM) {
    e.hint = "the container's seccomp profile blocks unshare/clone of namespaces: run the container with "
             "'--security-opt seccomp=unconfined' (or a profile that allows clone/unshare with CLONE_NEWUSER)";
  } else if (err == EPERM) {
    e.hint = "user namespaces are not permitted here (check 'sysctl user.max_user_namespaces', AppArmor, "
             "and whether a seccomp filter blocks unshare); run 'isolated-kernel doctor'";
  }
  return e;
}

}  // namespace ik
