#include "host/read_host.hpp"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <initializer_list>

#include "common/file_io.hpp"
#include "host/cgroup_probe.hpp"
#include "host/real_fs.hpp"
#include "host/user_db.hpp"

namespace ik {
namespace {

// $PWD keeps the path the user typed (through symlinks); use it when it
// still names the current directory, like `pwd -L`.
std::string logical_cwd(const std::map<std::string, std::string>& env) {
  char buf[PATH_MAX];
  std::string physical = getcwd(buf, sizeof buf) ? buf : "/";
  auto it = env.find("PWD");
  if (it == env.end() || it->second.empty() || it->second[0] != '/') return physical;
  struct stat a, b;
  if (stat(it->second.c_str(), &a) == 0 && stat(physical.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
      a.st_ino == b.st_ino)
    return it->second;
  return physical;
}

bool has_effective_caps(std::initializer_list<int> caps) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &hdr, data) != 0) return false;
  for (int cap : caps)
    if (!(data[cap / 32].effective & (1u << (cap % 32)))) return false;
  return true;
}

}  // namespace

MappableIds read_mappable_ids() {
  MappableIds m;
  if (geteuid() != 0 || !has_effective_caps({CAP_SETUID, CAP_SETGID})) return m;
  m.uids = parse_id_map(read_small_file_or_empty("/proc/self/uid_map"));
  m.gids = parse_id_map(read_small_file_or_empty("/proc/self/gid_map"));
  if (m.uids.empty() || m.gids.empty()) m = {};  // no /proc: stay with the single line
  return m;
}

Result<HostInfo> read_host_info(char** envp, bool probe_cgroup) {
  HostInfo h;
  for (char** e = envp; e && *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq) h.env.emplace(std::string(*e, static_cast<size_t>(eq - *e)), std::string(eq + 1));
  }
  h.uid = getuid();
  h.gid = getgid();
  h.ids = read_mappable_ids();
  if (auto pw = lookup_user(h.uid)) {
    h.user = std::move(pw->name);
    h.home = std::move(pw->home);
    h.shell = std::move(pw->shell);
  } else {
    h.user = "user" + std::to_string(h.uid);
    h.shell = "/bin/sh";
  }
  if (auto gr = lookup_group_name(h.gid)) h.group = std::move(*gr);
  else h.group = h.user;
  if (auto it = h.env.find("HOME"); it != h.env.end() && !it->second.empty()) h.home = it->second;
  if (h.home.empty() || h.home[0] != '/') h.home = "/nonexistent";
  if (h.shell.empty()) h.shell = "/bin/sh";
  h.cwd = logical_cwd(h.env);
  if (probe_cgroup) h.cgroup = probe_cgroup_host();
  h.fs = real_host_fs();
  return h;
}

}  // namespace ik
