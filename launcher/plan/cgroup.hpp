// cgroup v2 for limits, the host-facts and decision half: where the
// caller's cgroup is, what it offers, and which limit goes through a cgroup
// and which through an rlimit. All pure (unit tested with made-up hosts);
// host/cgroup_probe.cpp reads the files, apply/cgroup.cpp creates the cgroup.
#pragma once
#include <sys/types.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/error.hpp"
#include "parse/options.hpp"
#include "parse/units.hpp"

namespace ik {

// One cgroup file system from /proc/self/mountinfo.
struct CgroupMount {
  std::string mount_point;               // unescaped (\040 -> ' ')
  std::string root;                      // the mount's root inside the hierarchy (4th field)
  bool v2 = false;                       // cgroup2, else a v1 hierarchy
  std::vector<std::string> controllers;  // v1: the controllers it holds (from the super options)
};

// The caller's cgroup v2 path: the "0::/path" line of /proc/self/cgroup.
std::optional<std::string> parse_proc_cgroup_v2(const std::string& text);
// One mountinfo line; nullopt unless its type is cgroup or cgroup2.
std::optional<CgroupMount> parse_mountinfo_cgroup_line(const std::string& line);
std::vector<CgroupMount> parse_mountinfo_cgroups(const std::string& text);
// "cpu memory pids\n" -> {cpu, memory, pids}
std::set<std::string> parse_controller_list(const std::string& text);
// The cgroup2 mount under which `path` (from /proc/self/cgroup) lives, and
// the directory of that cgroup: mount point + path below the mount's root.
// Not assumed to be /sys/fs/cgroup (hybrid hosts mount it at .../unified).
std::optional<std::pair<CgroupMount, std::string>> locate_cgroup_dir(const std::vector<CgroupMount>& mounts,
                                                                     const std::string& path);

// What the caller's cgroup v2 offers, read once on the host.
struct CgroupHost {
  bool v2 = false;                        // our cgroup was found on a cgroup2 mount
  std::string problem;                    // when !v2: why (no cgroup2 mount, no 0:: line...)
  std::string mount;                      // e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified
  std::string path;                       // our cgroup, "/" for the root cgroup (or our cgroup namespace's)
  bool is_root = false;                   // the hierarchy's real root (no cgroup.type file): exempt from the
                                          // no-internal-processes rule; a namespace's "/" is not
  std::string dir;                        // its directory: mount + path
  std::set<std::string> controllers;      // dir/cgroup.controllers: what dir's children could get
  std::set<std::string> subtree_control;  // dir/cgroup.subtree_control: what they get now
  bool writable = false;                  // we may mkdir in dir, write its cgroup.procs and subtree_control
  bool other_processes = true;            // dir/cgroup.procs lists a process other than us
  std::map<std::string, std::string> v1;  // controller -> v1 mount point holding it (hybrid hosts)
  pid_t self_pid = 0;                     // names our cgroups: isolated-kernel-<pid>
};

// Whether plan_limits() will look at the host's cgroup at all: not for
// --limits=rlimit, nor for auto without --memory/--nproc. Lets the common
// start skip reading mountinfo and cgroupfs (about a tenth of a set-up).
bool cgroup_probe_needed(const Limits& limits, LimitsVia via);

// A file of the sandbox cgroup, written in order after mkdir.
struct CgroupFile {
  std::string name;  // e.g. pids.max
  std::string value;
  bool optional = false;  // skipped when the kernel lacks it (memory.swap.max without swap accounting)
};

// What apply/cgroup.cpp does, decided here.
struct CgroupPlan {
  bool use = false;
  bool required = false;            // --limits=cgroup: failing to create it is an error, not a fallback
  std::string why;                  // why a cgroup is used, or why not
  std::string parent;               // directory the sandbox cgroup is created in (our cgroup)
  std::string name;                 // isolated-kernel-<pid>
  std::string leaf;                 // non-empty: move ourselves into parent/leaf first (see plan_limits)
  std::vector<std::string> enable;  // controllers to enable in parent's cgroup.subtree_control
  std::vector<CgroupFile> files;
  std::string dir() const { return parent + "/" + name; }
};

// One limit given, and what enforces it.
struct LimitUse {
  std::string option;  // "--memory"
  std::string value;   // "256M"
  std::string via;     // "cgroup memory.max", "rlimit RLIMIT_AS", ...
};

struct LimitsPlan {
  CgroupPlan cgroup;
  Limits rlimits;              // the limits left to setrlimit (those the cgroup does not take)
  std::vector<LimitUse> uses;  // every limit given, in option order
};

// The decision. auto: each of --memory/--nproc goes to the cgroup when our
// cgroup is usable and has that controller, else to its rlimit. cgroup: all
// of them to the cgroup (which is created even with neither given) or an
// error naming what is missing. rlimit: no cgroup.
Result<LimitsPlan> plan_limits(const Limits& limits, LimitsVia via, const CgroupHost& host);

}  // namespace ik
