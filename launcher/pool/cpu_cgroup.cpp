#include "pool/cpu_cgroup.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

#include "common/file_io.hpp"
#include "common/log.hpp"

namespace ik::pool {

namespace {

constexpr const char* kV2Normal = "ik-pool";
constexpr const char* kV2Refill = "ik-refill";
constexpr const char* kV2RefillWeight = "1";  // of 1..10000, default 100
constexpr const char* kV1RefillShares = "2";  // of 2..262144, default 1024

RefillCgroups g_refill;

bool has_word(const std::string& list, const std::string& word, char sep) {
  std::string item;
  std::istringstream in(list);
  while (std::getline(in, item, sep)) {
    while (!item.empty() && (item.back() == '\n' || item.back() == ' ')) item.pop_back();
    if (item == word) return true;
  }
  return false;
}

std::vector<std::string> split_ws(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// A mountinfo line's mount point for `path` of its hierarchy, when the line
// is a mount of fstype `fstype` (and, for v1, has `cpu` in its options).
std::string mount_dir_for(const std::string& line, const std::string& fstype, const std::string& path) {
  const auto w = split_ws(line);
  size_t dash = 0;
  while (dash < w.size() && w[dash] != "-") ++dash;
  if (dash < 5 || dash + 3 > w.size() || w[dash + 1] != fstype) return {};
  if (fstype == "cgroup" && !has_word(w[dash + 3], "cpu", ',')) return {};
  const std::string& root = w[3];
  const std::string& mnt = w[4];
  if (root == "/") return path == "/" ? mnt : mnt + path;
  if (path.rfind(root, 0) != 0) return {};
  return mnt + path.substr(root.size());
}

bool writable(const std::string& path) { return access(path.c_str(), W_OK) == 0; }

int make_dir(const std::string& dir) { return mkdir(dir.c_str(), 0755) == 0 || errno == EEXIST ? 0 : errno; }

std::vector<pid_t> procs_of(const std::string& dir) {
  std::vector<pid_t> out;
  std::istringstream in(read_small_file_or_empty(dir + "/cgroup.procs"));
  for (long pid; in >> pid;) out.push_back(static_cast<pid_t>(pid));
  return out;
}

RefillCgroups none(const std::string& why) { return {0, {}, {}, why}; }

RefillCgroups prepare_v1(const std::string& dir) {
  if (!writable(dir + "/cgroup.procs")) return none("the cpu cgroup " + dir + " is not writable by this user");
  const std::string refill = dir + "/isolated-kernel-refill-" + std::to_string(getuid());
  if (int e = make_dir(refill); e != 0) return none("mkdir " + refill + ": " + std::strerror(e));
  if (int e = write_file(refill + "/cpu.shares", kV1RefillShares); e != 0)
    return none(refill + "/cpu.shares: " + std::strerror(e));
  return {1, dir, refill,
          "cgroup v1 " + refill + " (cpu.shares " + kV1RefillShares + " of 1024), back to " + dir + " when claimed"};
}

RefillCgroups prepare_v2(const std::string& dir, const std::string& mount_root) {
  // A daemon restarted in the leaf it made before uses that leaf's parent.
  std::string base = dir;
  if (base.size() > std::strlen(kV2Normal) && base.substr(base.rfind('/') + 1) == kV2Normal)
    base = base.substr(0, base.rfind('/'));
  if (base == mount_root) return none("this process is in the root cgroup, which is not ours to divide");
  if (!has_word(read_small_file_or_empty(base + "/cgroup.controllers"), "cpu", ' '))
    return none("the cpu controller is not available in the cgroup " + base + " (not delegated to this user)");
  if (!writable(base + "/cgroup.procs") || !writable(base + "/cgroup.subtree_control"))
    return none("the cgroup " + base + " is not delegated to this user (e.g. systemd Delegate=)");
  const std::string normal = base + "/" + kV2Normal, refill = base + "/" + kV2Refill;
  // Processes may live only in leaves once cpu is enabled for children: the
  // cgroup's processes go into ik-pool, which needs them to be ours alone
  // (the daemon, and `pool start` waiting for it), never a shell's scope.
  const std::set<pid_t> ours{getpid(), getppid()};
  const auto procs = procs_of(base);
  for (pid_t p : procs)
    if (!ours.count(p))
      return none("the cgroup " + base +
                  " holds other processes (run the pool as a service of its own: " + "the systemd user unit)");
  if (int e = make_dir(normal); e != 0) return none("mkdir " + normal + ": " + std::strerror(e));
  for (pid_t p : procs)
    if (int e = move_to_cgroup(normal, p); e != 0 && e != ESRCH)
      return none("move to " + normal + ": " + std::strerror(e));
  if (!has_word(read_small_file_or_empty(base + "/cgroup.subtree_control"), "cpu", ' '))
    if (int e = write_file(base + "/cgroup.subtree_control", "+cpu"); e != 0)
      return none(base + "/cgroup.subtree_control +cpu: " + std::strerror(e));
  if (int e = make_dir(refill); e != 0) return none("mkdir " + refill + ": " + std::strerror(e));
  if (int e = write_file(refill + "/cpu.weight", kV2RefillWeight); e != 0)
    return none(refill + "/cpu.weight: " + std::strerror(e));
  return {2, normal, refill,
          "cgroup v2 " + refill + " (cpu.weight " + kV2RefillWeight + " of 100), back to " + normal + " when claimed"};
}

void add_descendants(pid_t pid, std::vector<pid_t>& out, int depth) {
  if (depth > 8) return;
  out.push_back(pid);
  const std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(task_dir.c_str());
  if (!d) return;
  std::vector<pid_t> kids;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::istringstream in(read_small_file_or_empty(task_dir + "/" + e->d_name + "/children"));
    for (long c; in >> c;) kids.push_back(static_cast<pid_t>(c));
  }
  closedir(d);
  for (pid_t k : kids) add_descendants(k, out, depth + 1);
}

// Whether `pid` is listed in the cgroup directory `dir`.
bool is_in(pid_t pid, const std::string& dir) {
  for (pid_t p : procs_of(dir))
    if (p == pid) return true;
  return false;
}

}  // namespace

CpuCgroupPlace locate_cpu_cgroup(const std::string& proc_cgroup, const std::string& mountinfo) {
  std::istringstream in(proc_cgroup);
  std::string v1_path, v2_path;
  bool v2 = false;
  for (std::string line; std::getline(in, line);) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string ctrls = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (ctrls.empty()) v2 = true, v2_path = path;
    else if (has_word(ctrls, "cpu", ',')) v1_path = path;
  }
  const bool v1 = !v1_path.empty();
  if (!v1 && !v2) return {0, {}, "no cgroup hierarchy found in /proc/self/cgroup"};
  std::istringstream mi(mountinfo);
  for (std::string line; std::getline(mi, line);) {
    const std::string dir = v1 ? mount_dir_for(line, "cgroup", v1_path) : mount_dir_for(line, "cgroup2", v2_path);
    if (!dir.empty()) return {v1 ? 1 : 2, dir, {}};
  }
  return {0, {}, v1 ? "the cgroup v1 cpu hierarchy is not mounted" : "the cgroup2 hierarchy is not mounted"};
}

RefillCgroups prepare_refill_cgroups() {
  const auto place = locate_cpu_cgroup(read_small_file_or_empty("/proc/self/cgroup"),
                                       read_small_file_or_empty("/proc/self/mountinfo", nullptr, 1 << 20));
  if (place.version == 1) g_refill = prepare_v1(place.dir);
  else if (place.version == 2) {
    // The mount point: the directory where the hierarchy's root is.
    std::string root;
    std::istringstream mi(read_small_file_or_empty("/proc/self/mountinfo", nullptr, 1 << 20));
    for (std::string line; std::getline(mi, line);)
      if (auto d = mount_dir_for(line, "cgroup2", "/"); !d.empty()) root = d;
    g_refill = prepare_v2(place.dir, root);
  } else {
    g_refill = none(place.why);
  }
  return g_refill;
}

const RefillCgroups& refill_cgroups() { return g_refill; }

void remove_refill_cgroup() {
  if (g_refill.refill.empty()) return;
  // The waiting sandboxes' last processes may still be exiting (EBUSY).
  for (int tries = 0; tries < 50; ++tries) {
    if (rmdir(g_refill.refill.c_str()) == 0 || errno == ENOENT) return;
    if (errno != EBUSY) break;
    usleep(20000);
  }
  log::warn("pool: could not remove %s: %s", g_refill.refill.c_str(), std::strerror(errno));
}

std::string refill_cgroup_env_value(const RefillCgroups& c) {
  return c.refill.empty() ? std::string() : c.refill + "\n" + c.normal;
}

int move_to_cgroup(const std::string& dir, pid_t pid) { return write_file(dir + "/cgroup.procs", std::to_string(pid)); }

namespace {

// From the helper's environment: {refill, normal}, or empties.
std::pair<std::string, std::string> from_env() {
  const char* v = std::getenv(kRefillCgroupEnv);
  if (!v || !*v) return {};
  const std::string s = v;
  const size_t nl = s.find('\n');
  if (nl == std::string::npos) return {};
  return {s.substr(0, nl), s.substr(nl + 1)};
}

}  // namespace

bool enter_refill_cgroup(bool plan_uses_cgroup) {
  const auto [refill, normal] = from_env();
  if (refill.empty() || plan_uses_cgroup) return false;
  if (int e = move_to_cgroup(refill, getpid()); e != 0) {
    log::warn("pool: refill at normal priority: %s/cgroup.procs: %s", refill.c_str(), std::strerror(e));
    return false;
  }
  return true;
}

void leave_refill_cgroup(const std::vector<pid_t>& pids) {
  const auto [refill, normal] = from_env();
  if (normal.empty()) return;
  for (pid_t p : pids)
    if (p > 0)
      if (int e = move_to_cgroup(normal, p); e != 0 && e != ESRCH)
        log::warn("pool: could not raise the kernel's CPU priority again (%s/cgroup.procs: %s)", normal.c_str(),
                  std::strerror(e));
}

bool raise_from_refill_cgroup(pid_t helper) {
  if (g_refill.refill.empty()) return true;
  std::vector<pid_t> tree;
  add_descendants(helper, tree, 0);
  bool all = true;
  for (pid_t p : tree)
    if (is_in(p, g_refill.refill)) all = move_to_cgroup(g_refill.normal, p) == 0 && all;
  return all;
}

}  // namespace ik::pool
