#include "plan/cgroup.hpp"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "common/strings.hpp"

namespace ik {
namespace {

// The v1 controllers a hierarchy's super options can name.
const std::set<std::string>& known_v1_controllers() {
  static const std::set<std::string> k{"cpuset",   "cpu",     "cpuacct", "blkio",   "io",
                                       "memory",   "devices", "freezer", "net_cls", "perf_event",
                                       "net_prio", "hugetlb", "pids",    "rdma",    "misc"};
  return k;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

// "memory", "memory and pids"
std::string and_list(const std::vector<std::string>& v) {
  if (v.size() <= 1) return join(v, "");
  return join(std::vector<std::string>(v.begin(), v.end() - 1), ", ") + " and " + v.back();
}

}  // namespace

std::optional<std::string> parse_proc_cgroup_v2(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    // "hierarchy-ID:controller-list:path"; v2 is "0::path" (the path may contain ':').
    if (line.rfind("0::", 0) != 0) continue;
    std::string path = line.substr(3);
    if (path.empty() || path[0] != '/') return std::nullopt;
    return path;
  }
  return std::nullopt;
}

namespace {
// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_octal(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isdigit(static_cast<unsigned char>(s[i + 2])) && std::isdigit(static_cast<unsigned char>(s[i + 3]))) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}
}  // namespace

std::optional<CgroupMount> parse_mountinfo_cgroup_line(const std::string& line) {
  // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL FIELDS...] - FSTYPE SOURCE SUPEROPTIONS
  std::vector<std::string> f = split_nonempty(line, ' ');
  auto dash = std::find(f.begin(), f.end(), "-");
  if (f.size() < 5 || dash == f.end() || dash - f.begin() < 6 || f.end() - dash < 3) return std::nullopt;
  const std::string& type = *(dash + 1);
  if (type != "cgroup" && type != "cgroup2") return std::nullopt;
  CgroupMount m;
  m.root = unescape_octal(f[3]);
  m.mount_point = unescape_octal(f[4]);
  m.v2 = type == "cgroup2";
  if (!m.v2 && f.end() - dash >= 4)
    for (const auto& opt : split_nonempty(*(dash + 3), ','))
      if (known_v1_controllers().count(opt)) m.controllers.push_back(opt);
  return m;
}

std::vector<CgroupMount> parse_mountinfo_cgroups(const std::string& text) {
  std::vector<CgroupMount> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (auto m = parse_mountinfo_cgroup_line(line)) out.push_back(std::move(*m));
  return out;
}

std::set<std::string> parse_controller_list(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  std::string w;
  while (in >> w) out.insert(w);
  return out;
}

std::optional<std::pair<CgroupMount, std::string>> locate_cgroup_dir(const std::vector<CgroupMount>& mounts,
                                                                     const std::string& path) {
  const CgroupMount* best = nullptr;
  for (const auto& m : mounts) {
    if (!m.v2 || m.root.rfind("/..", 0) == 0) continue;  // a root outside our cgroup namespace
    bool inside = m.root == "/" || path == m.root || path.rfind(m.root + "/", 0) == 0;
    if (inside && (!best || m.root.size() > best->root.size())) best = &m;
  }
  if (!best) return std::nullopt;
  std::string rel = best->root == "/" ? path : path.substr(best->root.size());
  std::string dir = best->mount_point;
  if (!rel.empty() && rel != "/") dir = (dir == "/" ? "" : dir) + rel;
  return std::make_pair(*best, dir);
}

namespace {

// Why `host` cannot give the sandbox a child cgroup with `controllers`; empty if it can.
std::string unusable_reason(const CgroupHost& host, const std::vector<std::string>& controllers) {
  if (!host.v2) return host.problem;
  std::vector<std::string> missing;
  for (const auto& c : controllers)
    if (!host.controllers.count(c)) missing.push_back(c);
  if (!missing.empty()) {
    std::string r = host.is_root ? "cgroup v2 at " + host.mount : "cgroup v2 " + host.dir;
    r += " has no " + and_list(missing) + (missing.size() > 1 ? " controllers" : " controller");
    std::vector<std::string> held;
    for (const auto& c : missing)
      if (auto it = host.v1.find(c); it != host.v1.end()) held.push_back(c + " is held by cgroup v1 at " + it->second);
    if (!held.empty()) r += " (" + join(held, ", ") + ")";
    return r;
  }
  if (!host.writable) return "cgroup " + host.dir + " is not writable by us (not delegated)";
  bool to_enable = std::any_of(controllers.begin(), controllers.end(),
                               [&](const std::string& c) { return !host.subtree_control.count(c); });
  if (to_enable && !host.is_root && host.other_processes)
    return "cgroup " + host.dir +
           " also holds processes that are not ours, so cgroup v2's no-internal-processes "
           "rule forbids enabling controllers below it";
  return {};
}

std::string decimal(std::uint64_t v) { return std::to_string(v); }

}  // namespace

bool cgroup_probe_needed(const Limits& limits, LimitsVia via) {
  if (via == LimitsVia::kRlimit) return false;
  return via == LimitsVia::kCgroup || limits.memory_bytes || limits.nproc;
}

Result<LimitsPlan> plan_limits(const Limits& limits, LimitsVia via, const CgroupHost& host) {
  LimitsPlan out;
  out.rlimits = limits;
  CgroupPlan& cg = out.cgroup;
  // Which controllers the limits given would use, in a fixed order.
  std::vector<std::string> wanted;
  if (limits.memory_bytes) wanted.push_back("memory");
  if (limits.nproc) wanted.push_back("pids");

  std::vector<std::string> taken;  // controllers the sandbox cgroup gets
  if (via == LimitsVia::kRlimit) {
    cg.why = "--limits=rlimit";
  } else if (via == LimitsVia::kAuto && wanted.empty()) {
    cg.why = "not needed: no --memory or --nproc";
  } else if (std::string why = unusable_reason(host, wanted); why.empty()) {
    taken = wanted;
  } else if (via == LimitsVia::kCgroup) {
    return Error{"--limits=cgroup", 0, why,
                 "run it in a delegated cgroup of its own, e.g. under systemd-run --user --scope -p Delegate=yes; "
                 "or use --limits=auto to fall back to rlimits",
                 kExitSetup};
  } else {
    // auto: take what this cgroup can give, one controller at a time.
    std::vector<std::string> left, opts;
    for (const auto& c : wanted) {
      if (unusable_reason(host, {c}).empty()) {
        taken.push_back(c);
      } else {
        left.push_back(c);
        opts.push_back(c == "memory" ? "--memory" : "--nproc");
      }
    }
    // Why, once per cause: the controllers missing together, then the rest.
    std::vector<std::string> missing, rest, reasons;
    for (const auto& c : left) (host.controllers.count(c) ? rest : missing).push_back(c);
    if (!host.v2 || !missing.empty()) reasons.push_back(unusable_reason(host, host.v2 ? missing : left));
    if (host.v2 && !rest.empty()) reasons.push_back(unusable_reason(host, rest));
    cg.why = join(reasons, "; ") + ": " + join(opts, " and ") + (left.size() > 1 ? " use rlimits" : " uses an rlimit");
  }

  const bool use = via == LimitsVia::kCgroup || !taken.empty();
  if (use) {
    cg.use = true;
    cg.required = via == LimitsVia::kCgroup;
    cg.parent = host.dir;
    cg.name = "isolated-kernel-" + std::to_string(host.self_pid);
    for (const auto& c : taken)
      if (!host.subtree_control.count(c)) cg.enable.push_back(c);
    // cgroup v2 forbids enabling controllers in a cgroup that holds
    // processes (the root cgroup excepted). Ours holds only us (checked
    // above): move us into a leaf first, like crun does in a delegated scope.
    if (!cg.enable.empty() && !host.is_root) cg.leaf = cg.name + "-launcher";
    bool memory = std::find(taken.begin(), taken.end(), "memory") != taken.end();
    bool pids = std::find(taken.begin(), taken.end(), "pids") != taken.end();
    if (memory) {
      // One OOM kill takes the whole sandbox (init included), not a random
      // process of it; no swap, so the limit is hit at once instead of
      // after the host swapped.
      cg.files.push_back({"memory.oom.group", "1", false});
      cg.files.push_back({"memory.swap.max", "0", true});
      cg.files.push_back({"memory.max", decimal(*limits.memory_bytes), false});
      out.rlimits.memory_bytes.reset();
    }
    if (pids) {
      cg.files.push_back({"pids.max", decimal(*limits.nproc), false});
      out.rlimits.nproc.reset();
    }
    std::string what = taken.empty() ? "no controllers" : join(taken, ", ");
    std::string how = cg.leaf.empty() ? "" : "; we move into " + cg.leaf + " first (no internal processes)";
    std::string used =
        "cgroup " + cg.dir() + " (" + what + (cg.enable.empty() ? "" : ", enabled in " + cg.parent) + how + ")";
    cg.why = cg.why.empty() ? used : used + "; " + cg.why;
  }

  auto add = [&](const char* option, const std::string& value, const std::string& mech) {
    out.uses.push_back({option, value, mech});
  };
  if (limits.memory_bytes)
    add("--memory", format_size(*limits.memory_bytes),
        out.rlimits.memory_bytes ? "rlimit RLIMIT_AS" : "cgroup memory.max");
  if (limits.cpu_seconds) add("--cpu-time", decimal(*limits.cpu_seconds) + "s", "rlimit RLIMIT_CPU");
  if (limits.wall_seconds) add("--wall-time", decimal(*limits.wall_seconds) + "s", "timer (SIGKILL to the sandbox)");
  if (limits.nproc)
    add("--nproc", decimal(*limits.nproc), out.rlimits.nproc ? "rlimit RLIMIT_NPROC" : "cgroup pids.max");
  if (limits.nofile) add("--nofile", decimal(*limits.nofile), "rlimit RLIMIT_NOFILE");
  if (limits.fsize_bytes) add("--fsize", format_size(*limits.fsize_bytes), "rlimit RLIMIT_FSIZE");
  return out;
}

}  // namespace ik
