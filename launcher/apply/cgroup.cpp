#include "apply/cgroup.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "common/file_io.hpp"
#include "common/log.hpp"

namespace ik {
namespace {

constexpr const char* kHint = "check with 'isolated-kernel doctor', or use --limits=rlimit";

Status write_or_fail(const std::string& path, const std::string& value, const std::string& why) {
  if (int e = write_file(path, value); e != 0)
    return sys_error("write '" + value + "' to " + path + " (" + why + ")", e, kHint);
  return ok();
}

void sleep_ms(long ms) {
  timespec ts{0, ms * 1000000L};
  nanosleep(&ts, nullptr);
}

// rmdir a cgroup and any child cgroups (depth first). A cgroup is empty of
// files for rmdir's purposes; it only fails while processes are inside.
int remove_tree(const std::string& dir) {
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_type != DT_DIR || !std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
      remove_tree(dir + "/" + e->d_name);
    }
    closedir(d);
  }
  return rmdir(dir.c_str()) == 0 || errno == ENOENT ? 0 : errno;
}

std::string plus_list(const std::vector<std::string>& controllers, char sign) {
  std::string s;
  for (const auto& c : controllers) s += (s.empty() ? "" : " ") + std::string(1, sign) + c;
  return s;
}

}  // namespace

std::optional<std::uint64_t> cgroup_keyed_value(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  std::uint64_t v;
  while (in >> k >> v)
    if (k == key) return v;
  return std::nullopt;
}

void remove_stale_cgroups(const std::string& parent, pid_t self) {
  DIR* d = opendir(parent.c_str());
  if (!d) return;
  const std::string prefix = "isolated-kernel-";
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (e->d_type != DT_DIR || name.rfind(prefix, 0) != 0) continue;
    std::string rest = name.substr(prefix.size());
    const std::string leaf_suffix = "-launcher";
    if (rest.size() > leaf_suffix.size() &&
        rest.compare(rest.size() - leaf_suffix.size(), std::string::npos, leaf_suffix) == 0)
      rest.resize(rest.size() - leaf_suffix.size());
    if (rest.empty() || rest.size() > 9 || rest.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = static_cast<pid_t>(std::stol(rest));
    // Alive (or someone else's, EPERM): not ours to touch.
    if (pid == self || pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH) continue;
    if (remove_tree(parent + "/" + name) == 0)
      log::step("cgroup: removed %s/%s, left by a launcher that is gone", parent.c_str(), name.c_str());
  }
  closedir(d);
}

Result<SandboxCgroup> SandboxCgroup::create(const CgroupPlan& plan) {
  SandboxCgroup cg;  // from here on, the destructor undoes whatever was done
  cg.parent_ = plan.parent;
  const pid_t self = getpid();
  remove_stale_cgroups(plan.parent, self);
  if (!plan.leaf.empty()) {
    std::string leaf = plan.parent + "/" + plan.leaf;
    if (mkdir(leaf.c_str(), 0755) != 0 && errno != EEXIST) return sys_error("mkdir " + leaf, errno, kHint);
    cg.leaf_ = leaf;
    // Only ourselves (the planner checked that the cgroup holds no other
    // process): cgroup v2 enables no controller below a cgroup with processes.
    IK_TRY(write_or_fail(leaf + "/cgroup.procs", std::to_string(self), "move the launcher into a leaf"));
    log::step("cgroup: moved the launcher into %s", leaf.c_str());
  }
  if (!plan.enable.empty()) {
    std::string cmd = plus_list(plan.enable, '+');
    IK_TRY(write_or_fail(plan.parent + "/cgroup.subtree_control", cmd, "enable controllers"));
    // In the root cgroup they stay enabled (other cgroups may use them by now);
    // in our own cgroup we undo it at the end.
    if (!cg.leaf_.empty()) cg.enabled_ = plan.enable;
    log::step("cgroup: enabled %s in %s/cgroup.subtree_control", cmd.c_str(), plan.parent.c_str());
  }
  std::string dir = plan.dir();
  if (mkdir(dir.c_str(), 0755) != 0) {
    // Ours by name (our pid) and left over from an earlier process with this pid.
    if (errno != EEXIST || remove_tree(dir) != 0 || mkdir(dir.c_str(), 0755) != 0)
      return sys_error("mkdir " + dir, errno, kHint);
  }
  cg.dir_ = dir;
  cg.created_ = true;
  for (const auto& f : plan.files) {
    std::string path = dir + "/" + f.name;
    int e = write_file(path, f.value);
    if (e == ENOENT && f.optional) {
      log::step("cgroup: %s not supported here, skipped", f.name.c_str());
      continue;
    }
    if (e != 0) return sys_error("write '" + f.value + "' to " + path, e, kHint);
    log::step("cgroup: %s = %s", f.name.c_str(), f.value.c_str());
  }
  cg.fd_.reset(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cg.fd_.valid()) return sys_error("open " + dir, errno, kHint);
  log::step("cgroup: created %s", dir.c_str());
  return cg;
}

SandboxCgroup::SandboxCgroup(SandboxCgroup&& o) noexcept
    : parent_(std::move(o.parent_)),
      dir_(std::move(o.dir_)),
      leaf_(std::move(o.leaf_)),
      enabled_(std::move(o.enabled_)),
      fd_(std::move(o.fd_)),
      created_(std::exchange(o.created_, false)) {
  o.leaf_.clear();
  o.enabled_.clear();
}

SandboxCgroup::~SandboxCgroup() { remove(); }

Status SandboxCgroup::add_process(pid_t pid) const {
  return write_or_fail(dir_ + "/cgroup.procs", std::to_string(pid), "move the sandbox into its cgroup");
}

LimitEvents SandboxCgroup::events() const {
  LimitEvents ev;
  if (!created_) return ev;
  ev.oom_kills = cgroup_keyed_value(read_small_file_or_empty(dir_ + "/memory.events"), "oom_kill").value_or(0);
  ev.pids_max = cgroup_keyed_value(read_small_file_or_empty(dir_ + "/pids.events"), "max").value_or(0);
  return ev;
}

void SandboxCgroup::remove() {
  fd_.reset();
  if (created_) {
    created_ = false;
    // The sandbox's init was reaped, and with it its pid namespace; kill
    // whatever could still be inside anyway (cgroup.kill, Linux 5.14+), then
    // wait for the cgroup to empty: exiting tasks leave it asynchronously.
    write_file(dir_ + "/cgroup.kill", "1");
    int e = 0;
    for (int i = 0; i < 200 && (e = remove_tree(dir_)) == EBUSY; ++i) sleep_ms(10);
    if (e != 0) log::warn("warning: cannot remove cgroup %s: %s", dir_.c_str(), std::strerror(e));
    else log::step("cgroup: removed %s", dir_.c_str());
  }
  if (!leaf_.empty()) {
    // Undo the leaf dance, so our cgroup is as we found it.
    if (!enabled_.empty()) write_file(parent_ + "/cgroup.subtree_control", plus_list(enabled_, '-'));
    if (write_file(parent_ + "/cgroup.procs", std::to_string(getpid())) == 0) remove_tree(leaf_);
    leaf_.clear();
    enabled_.clear();
  }
}

}  // namespace ik
