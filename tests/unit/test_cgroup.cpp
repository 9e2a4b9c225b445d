// cgroup v2 for limits: the parsers and decisions of plan/cgroup (made-up
// hosts), the exit explanation, and (as root, where the cgroup v2 has the
// hugetlb controller) apply/cgroup's leaf dance on the real cgroup tree.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "apply/cgroup.hpp"
#include "apply/limits.hpp"
#include "parse/config.hpp"
#include "host/cgroup_probe.hpp"
#include "host/memory_fs.hpp"
#include "plan/cgroup.hpp"
#include "plan/planner.hpp"

using ik::CgroupHost;
using ik::Limits;
using ik::LimitsVia;
using Strings = std::vector<std::string>;

namespace {

// This machine's layout when the tests were written: hybrid, v2 at .../unified.
const char* kHybridCgroup = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/726736c83b7221fb\n1:cpu:/\n0::/\n";
const char* kHybridMountinfo = "23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
                               "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
                               "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
                               "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
                               "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
                               "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
                               "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

// A systemd user's delegated scope, holding only the launcher.
CgroupHost delegated_scope() {
  CgroupHost h;
  h.v2 = true;
  h.mount = "/sys/fs/cgroup";
  h.path = "/user.slice/user-1000.slice/user@1000.service/app.slice/run-u7.scope";
  h.dir = h.mount + h.path;
  h.controllers = {"cpu", "memory", "pids"};
  h.writable = true;
  h.other_processes = false;
  h.self_pid = 4242;
  return h;
}

// Root in the root cgroup of a VM or container without systemd.
CgroupHost root_cgroup() {
  CgroupHost h;
  h.v2 = true;
  h.mount = "/sys/fs/cgroup/unified";
  h.path = "/";
  h.is_root = true;
  h.dir = h.mount;
  h.controllers = {"hugetlb", "pids"};
  h.writable = true;
  h.other_processes = true;
  h.v1 = {{"memory", "/sys/fs/cgroup/memory"}, {"cpu", "/sys/fs/cgroup/cpu"}};
  h.self_pid = 77;
  return h;
}

Limits mem_and_nproc() {
  Limits l;
  l.memory_bytes = 256ull << 20;
  l.nproc = 20;
  return l;
}

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

std::string via_of(const ik::LimitsPlan& p, const std::string& option) {
  for (const auto& u : p.uses)
    if (u.option == option) return u.via;
  return "(not listed)";
}

std::string file_value(const ik::CgroupPlan& c, const std::string& name) {
  for (const auto& f : c.files)
    if (f.name == name) return f.value;
  return "(none)";
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("cgroup: /proc/self/cgroup") {
  CHECK(ik::parse_proc_cgroup_v2(kHybridCgroup) == std::optional<std::string>("/"));
  CHECK(ik::parse_proc_cgroup_v2("0::/user.slice/user-1000.slice/session-3.scope\n") ==
        std::optional<std::string>("/user.slice/user-1000.slice/session-3.scope"));
  // A ':' in the path belongs to the path.
  CHECK(ik::parse_proc_cgroup_v2("0::/a:b/c\n") == std::optional<std::string>("/a:b/c"));
  CHECK(ik::parse_proc_cgroup_v2("0::/../../other\n") == std::optional<std::string>("/../../other"));
  CHECK_FALSE(ik::parse_proc_cgroup_v2("12:pids:/\n4:memory:/x\n"));  // v1 only
  CHECK_FALSE(ik::parse_proc_cgroup_v2(""));
  CHECK_FALSE(ik::parse_proc_cgroup_v2("0::\n"));
}

TEST_CASE("cgroup: mountinfo lines") {
  auto v2 = ik::parse_mountinfo_cgroup_line("41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw");
  REQUIRE(v2);
  CHECK(v2->v2);
  CHECK(v2->mount_point == "/sys/fs/cgroup/unified");
  CHECK(v2->root == "/");
  auto v1 = ik::parse_mountinfo_cgroup_line(
      "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,xattr,cpu,cpuacct");
  REQUIRE(v1);
  CHECK_FALSE(v1->v2);
  CHECK(v1->controllers == Strings{"cpu", "cpuacct"});
  auto named =
      ik::parse_mountinfo_cgroup_line("40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd");
  REQUIRE(named);
  CHECK(named->controllers.empty());
  // Optional fields before the separator; octal escapes in paths.
  auto esc = ik::parse_mountinfo_cgroup_line(
      "50 1 0:40 /docker/ab\\040c /my\\040cg rw,relatime shared:1 master:2 - cgroup2 none rw,nsdelegate");
  REQUIRE(esc);
  CHECK(esc->mount_point == "/my cg");
  CHECK(esc->root == "/docker/ab c");
  CHECK_FALSE(ik::parse_mountinfo_cgroup_line("23 1 0:22 / /sys rw - sysfs sysfs rw"));
  CHECK_FALSE(ik::parse_mountinfo_cgroup_line("garbage"));
  CHECK_FALSE(ik::parse_mountinfo_cgroup_line("1 2 3 4 5 6 - cgroup2"));
  auto all = ik::parse_mountinfo_cgroups(kHybridMountinfo);
  REQUIRE(all.size() == 5);
  CHECK(all.back().v2);
}

TEST_CASE("cgroup: locating our cgroup's directory") {
  auto hybrid = ik::parse_mountinfo_cgroups(kHybridMountinfo);
  auto at = ik::locate_cgroup_dir(hybrid, "/");
  REQUIRE(at);
  CHECK(at->second == "/sys/fs/cgroup/unified");  // not assumed to be /sys/fs/cgroup
  at = ik::locate_cgroup_dir(hybrid, "/a/b");
  REQUIRE(at);
  CHECK(at->second == "/sys/fs/cgroup/unified/a/b");
  // A container's mount whose root is its own cgroup; a mount from outside our namespace is skipped.
  auto ct = ik::parse_mountinfo_cgroups("60 1 0:40 /../x /elsewhere rw - cgroup2 cgroup2 rw\n"
                                        "61 1 0:40 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
                                        "62 1 0:40 / /mnt/cg2 rw - cgroup2 cgroup2 rw\n");
  at = ik::locate_cgroup_dir(ct, "/docker/abc/sub");
  REQUIRE(at);
  CHECK(at->second == "/sys/fs/cgroup/sub");  // the longest matching root wins
  at = ik::locate_cgroup_dir(ct, "/docker/abc");
  REQUIRE(at);
  CHECK(at->second == "/sys/fs/cgroup");
  at = ik::locate_cgroup_dir(ct, "/docker/abcdef");  // a prefix of the name, not of the path
  REQUIRE(at);
  CHECK(at->second == "/mnt/cg2/docker/abcdef");
  CHECK_FALSE(ik::locate_cgroup_dir(ik::parse_mountinfo_cgroups("39 31 0:36 / /p rw - cgroup cgroup rw,pids\n"), "/"));
  CHECK(ik::parse_controller_list("cpuset cpu io memory pids\n") ==
        std::set<std::string>{"cpu", "cpuset", "io", "memory", "pids"});
  CHECK(ik::parse_controller_list("\n").empty());
}

TEST_CASE("cgroup: plan, delegated scope holding only us -> leaf, controllers enabled") {
  auto p = ik::plan_limits(mem_and_nproc(), LimitsVia::kAuto, delegated_scope());
  REQUIRE(p);
  const auto& c = p->cgroup;
  CHECK(c.use);
  CHECK_FALSE(c.required);
  CHECK(c.parent == delegated_scope().dir);
  CHECK(c.name == "isolated-kernel-4242");
  CHECK(c.leaf == "isolated-kernel-4242-launcher");
  CHECK(c.enable == Strings{"memory", "pids"});
  CHECK(file_value(c, "memory.max") == std::to_string(256 << 20));
  CHECK(file_value(c, "memory.oom.group") == "1");
  CHECK(file_value(c, "memory.swap.max") == "0");
  CHECK(file_value(c, "pids.max") == "20");
  // The cgroup takes them: no rlimit for either.
  CHECK_FALSE(p->rlimits.memory_bytes);
  CHECK_FALSE(p->rlimits.nproc);
  CHECK(via_of(*p, "--memory") == "cgroup memory.max");
  CHECK(via_of(*p, "--nproc") == "cgroup pids.max");
}

TEST_CASE("cgroup: plan, other processes in our cgroup -> rlimits (no internal processes)") {
  CgroupHost h = delegated_scope();
  h.other_processes = true;
  auto p = ik::plan_limits(mem_and_nproc(), LimitsVia::kAuto, h);
  REQUIRE(p);
  CHECK_FALSE(p->cgroup.use);
  CHECK(has(p->cgroup.why, "no-internal-processes"));
  CHECK(has(p->cgroup.why, "--memory and --nproc use rlimits"));
  CHECK(*p->rlimits.memory_bytes == 256ull << 20);
  CHECK(*p->rlimits.nproc == 20);
  CHECK(via_of(*p, "--memory") == "rlimit RLIMIT_AS");
  CHECK(via_of(*p, "--nproc") == "rlimit RLIMIT_NPROC");
  auto strict = ik::plan_limits(mem_and_nproc(), LimitsVia::kCgroup, h);
  REQUIRE_FALSE(strict);
  CHECK(strict.error().exit_code == ik::kExitSetup);
  CHECK(has(strict.error().describe(), "--limits=cgroup"));
  CHECK(has(strict.error().describe(), "Delegate=yes"));
  // Controllers already enabled below it (a threaded subtree): no leaf needed, nothing to enable.
  h.subtree_control = {"memory", "pids"};
  p = ik::plan_limits(mem_and_nproc(), LimitsVia::kAuto, h);
  REQUIRE(p);
  CHECK(p->cgroup.use);
  CHECK(p->cgroup.enable.empty());
  CHECK(p->cgroup.leaf.empty());
}

TEST_CASE("cgroup: plan, root cgroup -> enable there, no leaf; memory held by v1 -> partial") {
  auto p = ik::plan_limits(mem_and_nproc(), LimitsVia::kAuto, root_cgroup());
  REQUIRE(p);
  const auto& c = p->cgroup;
  CHECK(c.use);
  CHECK(c.parent == "/sys/fs/cgroup/unified");
  CHECK(c.dir() == "/sys/fs/cgroup/unified/isolated-kernel-77");
  CHECK(c.leaf.empty());  // the root cgroup may hold processes and still enable controllers
  CHECK(c.enable == Strings{"pids"});
  CHECK(file_value(c, "memory.max") == "(none)");
  CHECK(via_of(*p, "--nproc") == "cgroup pids.max");
  CHECK(via_of(*p, "--memory") == "rlimit RLIMIT_AS");
  CHECK(*p->rlimits.memory_bytes == 256ull << 20);
  CHECK_FALSE(p->rlimits.nproc);
  CHECK(has(c.why, "has no memory controller (memory is held by cgroup v1 at /sys/fs/cgroup/memory)"));
  CHECK(has(c.why, "--memory uses an rlimit"));
  // --limits=cgroup wants both.
  auto strict = ik::plan_limits(mem_and_nproc(), LimitsVia::kCgroup, root_cgroup());
  REQUIRE_FALSE(strict);
  CHECK(has(strict.error().describe(), "cgroup v2 at /sys/fs/cgroup/unified has no memory controller"));
}

TEST_CASE("cgroup: plan, a cgroup namespace's \"/\" is not the root cgroup") {
  // A container: its cgroup is "/" inside its namespace, but holds processes and is bound by the rule.
  CgroupHost h = root_cgroup();
  h.is_root = false;
  auto p = ik::plan_limits(mem_and_nproc(), LimitsVia::kAuto, h);
  REQUIRE(p);
  CHECK_FALSE(p->cgroup.use);
  CHECK(has(p->cgroup.why, "no-internal-processes"));
  CHECK(has(p->cgroup.why, "has no memory controller"));
  h.other_processes = false;  // alone in it: the leaf dance works there too
  p = ik::plan_limits(mem_and_nproc(), LimitsVia::kAuto, h);
  REQUIRE(p);
  CHECK(p->cgroup.leaf == "isolated-kernel-77-launcher");
}

TEST_CASE("cgroup: plan, this machine's hybrid layout -> both rlimits, and why") {
  CgroupHost h = root_cgroup();
  h.controllers = {"hugetlb"};
  h.v1["pids"] = "/sys/fs/cgroup/pids";
  auto p = ik::plan_limits(mem_and_nproc(), LimitsVia::kAuto, h);
  REQUIRE(p);
  CHECK_FALSE(p->cgroup.use);
  CHECK(p->cgroup.why ==
        "cgroup v2 at /sys/fs/cgroup/unified has no memory and pids controllers (memory is held by cgroup v1 at "
        "/sys/fs/cgroup/memory, pids is held by cgroup v1 at /sys/fs/cgroup/pids): --memory and --nproc use rlimits");
  // Not writable: not delegated to this user.
  h = delegated_scope();
  h.writable = false;
  p = ik::plan_limits(mem_and_nproc(), LimitsVia::kAuto, h);
  REQUIRE(p);
  CHECK_FALSE(p->cgroup.use);
  CHECK(has(p->cgroup.why, "is not writable"));
  // No cgroup v2 at all.
  CgroupHost none;
  none.problem = "cgroup v2 is not mounted";
  p = ik::plan_limits(mem_and_nproc(), LimitsVia::kAuto, none);
  REQUIRE(p);
  CHECK_FALSE(p->cgroup.use);
  CHECK(has(p->cgroup.why, "cgroup v2 is not mounted"));
}

TEST_CASE("cgroup: plan, modes and limits that never use a cgroup") {
  // rlimit: no cgroup even when one is usable.
  auto p = ik::plan_limits(mem_and_nproc(), LimitsVia::kRlimit, delegated_scope());
  REQUIRE(p);
  CHECK_FALSE(p->cgroup.use);
  CHECK(p->cgroup.why == "--limits=rlimit");
  CHECK(*p->rlimits.nproc == 20);
  // auto without --memory/--nproc: nothing for a cgroup to do.
  Limits other;
  other.cpu_seconds = 60;
  other.wall_seconds = 90;
  other.nofile = 64;
  other.fsize_bytes = 1ull << 20;
  p = ik::plan_limits(other, LimitsVia::kAuto, delegated_scope());
  REQUIRE(p);
  CHECK_FALSE(p->cgroup.use);
  REQUIRE(p->uses.size() == 4);
  CHECK(p->uses[0].option == "--cpu-time");
  CHECK(p->uses[0].value == "60s");
  CHECK(p->uses[0].via == "rlimit RLIMIT_CPU");
  CHECK(p->uses[1].via == "timer (SIGKILL to the sandbox)");
  CHECK(p->uses[2].via == "rlimit RLIMIT_NOFILE");
  CHECK(p->uses[3].value == "1M");
  CHECK(p->uses[3].via == "rlimit RLIMIT_FSIZE");
  // cgroup without --memory/--nproc: a cgroup with no controllers (no leaf needed), even with other processes.
  CgroupHost busy = delegated_scope();
  busy.other_processes = true;
  p = ik::plan_limits(other, LimitsVia::kCgroup, busy);
  REQUIRE(p);
  CHECK(p->cgroup.use);
  CHECK(p->cgroup.required);
  CHECK(p->cgroup.enable.empty());
  CHECK(p->cgroup.leaf.empty());
  CHECK(p->cgroup.files.empty());
  CHECK(*p->rlimits.cpu_seconds == 60);
  busy.writable = false;
  CHECK_FALSE(ik::plan_limits(other, LimitsVia::kCgroup, busy));
}

TEST_CASE("cgroup: sizes in messages") {
  CHECK(ik::format_size(256ull << 20) == "256M");
  CHECK(ik::format_size(1ull << 30) == "1G");
  CHECK(ik::format_size(1536ull << 20) == "1536M");
  CHECK(ik::format_size(1000) == "1000");
  CHECK(ik::format_size(0) == "0");
}

TEST_CASE("cgroup: flat-keyed files") {
  const std::string events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n";
  CHECK(ik::cgroup_keyed_value(events, "oom_kill") == std::optional<std::uint64_t>(1));
  CHECK(ik::cgroup_keyed_value(events, "max") == std::optional<std::uint64_t>(12));
  CHECK_FALSE(ik::cgroup_keyed_value(events, "oom_kil"));
  CHECK_FALSE(ik::cgroup_keyed_value("", "max"));
}

TEST_CASE("cgroup: the exit explanation") {
  ik::Plan plan;
  plan.limits = mem_and_nproc();
  plan.limits.cpu_seconds = 2;
  plan.limits.fsize_bytes = 1ull << 20;
  plan.rlimits = plan.limits;
  plan.rlimits.memory_bytes.reset();
  plan.rlimits.nproc.reset();
  CHECK(ik::explain_limit_exit(plan, 0, {}) == "");
  CHECK(ik::explain_limit_exit(plan, 137, {1, 0}) ==
        "killed by the memory limit of 256M (cgroup memory.max, --memory)");
  CHECK(ik::explain_limit_exit(plan, 1, {0, 57}) ==
        "57 forks refused at the process limit of 20 (cgroup pids.max, --nproc)");
  CHECK(ik::explain_limit_exit(plan, 128 + SIGXCPU, {}) ==
        "killed by the CPU time limit of 2s (RLIMIT_CPU, --cpu-time)");
  CHECK(has(ik::explain_limit_exit(plan, 128 + SIGXFSZ, {}), "file size limit of 1M (RLIMIT_FSIZE, --fsize)"));
  CHECK(has(ik::explain_limit_exit(plan, 137, {1, 3}), "; 3 forks refused"));
  CHECK(ik::explain_limit_exit(plan, 137, {}) ==
        "killed by SIGKILL, most likely at the CPU time limit of 2s (RLIMIT_CPU, --cpu-time)");
  CHECK(ik::explain_limit_exit(plan, 137, {}, true) == "");  // the wall-time kill, reported by the caller
  CHECK(ik::explain_limit_exit(plan, 137, {1, 0}) ==
        "killed by the memory limit of 256M (cgroup memory.max, --memory)");
  // Counters of limits that were not given explain nothing.
  ik::Plan bare;
  CHECK(ik::explain_limit_exit(bare, 128 + SIGXCPU, {1, 1}) == "");
}

TEST_CASE("cgroup: --print-plan shows what enforces each limit") {
  ik::Options o;
  o.limits = mem_and_nproc();
  o.limits.nofile = 32;
  ik::HostInfo host;
  host.uid = 1000;
  host.gid = 1000;
  host.user = "alice";
  host.group = "alice";
  host.home = "/tmp";
  host.shell = "/bin/sh";
  host.cwd = "/tmp";
  host.fs = std::make_shared<ik::MemoryFs>(ik::MemoryFs::debian());
  host.cgroup = delegated_scope();
  auto plan = ik::build_plan(o, host);
  REQUIRE(plan);
  auto j = ik::plan_to_json(*plan);
  CHECK(j["limits"]["nproc"] == 20);
  CHECK(j["limit_mechanisms"]["memory"] == "cgroup memory.max");
  CHECK(j["limit_mechanisms"]["nproc"] == "cgroup pids.max");
  CHECK(j["limit_mechanisms"]["nofile"] == "rlimit RLIMIT_NOFILE");
  CHECK(j["cgroup"]["use"] == true);
  CHECK(j["cgroup"]["dir"] == delegated_scope().dir + "/isolated-kernel-4242");
  CHECK(j["cgroup"]["launcher_leaf"] == delegated_scope().dir + "/isolated-kernel-4242-launcher");
  CHECK(j["cgroup"]["files"]["pids.max"] == "20");
  CHECK_FALSE(plan->rlimits.nproc);
  CHECK(*plan->rlimits.nofile == 32);
  // The default host (no cgroup known): rlimits, and an error for --limits=cgroup.
  host.cgroup = CgroupHost{};
  host.cgroup.problem = "no cgroup v2 entry (0::) in /proc/self/cgroup";
  plan = ik::build_plan(o, host);
  REQUIRE(plan);
  CHECK(ik::plan_to_json(*plan)["cgroup"]["use"] == false);
  CHECK(*plan->rlimits.nproc == 20);
  o.limits_via = LimitsVia::kCgroup;
  auto strict = ik::build_plan(o, host);
  REQUIRE_FALSE(strict);
  CHECK(strict.error().exit_code == ik::kExitSetup);
}

TEST_CASE("cgroup: limits.mechanism in configs") {
  ik::Options o;
  REQUIRE(ik::apply_config_json(nlohmann::json::parse(R"({"limits": {"mechanism": "cgroup", "nproc": 5}})"), "c.json",
                                o));
  CHECK(o.limits_via == LimitsVia::kCgroup);
  CHECK(*o.limits.nproc == 5);
  CHECK(ik::options_to_config_json(o)["limits"]["mechanism"] == "cgroup");
  ik::Options d;
  CHECK_FALSE(ik::options_to_config_json(d)["limits"].contains("mechanism"));  // auto is the default
  for (const char* bad : {R"({"limits": {"mechanism": "cgroups"}})", R"({"limits": {"mechanism": 1}})"}) {
    ik::Options b;
    auto s = ik::apply_config_json(nlohmann::json::parse(bad), "c.json", b);
    REQUIRE_FALSE(s);
    CHECK(has(s.error().describe(), "limits.mechanism"));
  }
}

// The leaf dance on the real cgroup tree, with the hugetlb controller (the
// one this development machine's cgroup v2 has; the code is the same for
// memory and pids): a child process alone in a fresh cgroup D moves itself
// into D/<leaf>, enables the controller in D, creates D/<name>; at the end
// everything is undone and the process is back in D.
TEST_CASE("cgroup: leaf dance on the real cgroup tree (root, cgroup v2 with hugetlb)") {
  CgroupHost host = ik::probe_cgroup_host();
  if (geteuid() != 0 || !host.v2 || !host.is_root || !host.controllers.count("hugetlb")) {
    MESSAGE("skipped: needs root in the root cgroup of a cgroup v2 with the hugetlb controller");
    return;
  }
  // D gets hugetlb from the root; put the root back as found at the end.
  const bool enable_in_root = !host.subtree_control.count("hugetlb");
  if (enable_in_root) std::ofstream(host.mount + "/cgroup.subtree_control") << "+hugetlb" << std::flush;
  const std::string d = host.mount + "/ik-unit-cgroup-" + std::to_string(getpid());
  REQUIRE(mkdir(d.c_str(), 0755) == 0);
  int pipefd[2];
  REQUIRE(pipe(pipefd) == 0);
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Alone in D, like a launcher under systemd-run --scope.
    std::ofstream(d + "/cgroup.procs") << getpid() << std::flush;
    std::string report;
    auto say = [&](bool okay, const std::string& what) { report += (okay ? "" : "FAILED: " + what + "\n"); };
    CgroupHost me = ik::probe_cgroup_host();
    say(me.dir == d && !me.other_processes && me.writable && me.controllers.count("hugetlb"),
        "probe sees D holding only us, with hugetlb: " + me.dir);
    ik::CgroupPlan plan;
    plan.use = true;
    plan.parent = d;
    plan.name = "isolated-kernel-" + std::to_string(getpid());
    plan.leaf = plan.name + "-launcher";
    plan.enable = {"hugetlb"};
    plan.files = {{"no.such.file", "1", true}};
    {
      auto cg = ik::SandboxCgroup::create(plan);
      say(cg.ok(), cg.ok() ? "" : "create: " + cg.error().describe());
      if (cg) {
        say(has(slurp("/proc/self/cgroup"), "0::" + d.substr(host.mount.size()) + "/" + plan.leaf),
            "we are in the leaf: " + slurp("/proc/self/cgroup"));
        say(has(slurp(d + "/cgroup.subtree_control"), "hugetlb"), "hugetlb enabled in D");
        say(has(slurp(plan.dir() + "/cgroup.controllers"), "hugetlb"), "the sandbox cgroup has hugetlb");
        say(cg->fd() >= 0, "fd");
      }
    }
    say(!std::filesystem::exists(plan.dir()), "sandbox cgroup removed");
    say(!std::filesystem::exists(d + "/" + plan.leaf), "leaf removed");
    say(!has(slurp(d + "/cgroup.subtree_control"), "hugetlb"), "hugetlb disabled again in D");
    say(has(slurp("/proc/self/cgroup"), "0::" + d.substr(host.mount.size()) + "\n"), "back in D");
    if (write(pipefd[1], report.data(), report.size()) < 0) _exit(2);
    _exit(0);
  }
  close(pipefd[1]);
  std::string report;
  char buf[512];
  for (ssize_t n; (n = read(pipefd[0], buf, sizeof buf)) > 0;) report.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_MESSAGE(report.empty(), report);
  CHECK(rmdir(d.c_str()) == 0);
  if (enable_in_root) std::ofstream(host.mount + "/cgroup.subtree_control") << "-hugetlb" << std::flush;
  CHECK(ik::parse_controller_list(slurp(host.mount + "/cgroup.subtree_control")) == host.subtree_control);
}

TEST_CASE("cgroup: stale cgroups of dead launchers are removed, live ones kept") {
  CgroupHost host = ik::probe_cgroup_host();
  if (!host.v2 || !host.writable) {
    MESSAGE("skipped: needs a writable cgroup v2");
    return;
  }
  const std::string d = host.dir + "/ik-unit-stale-" + std::to_string(getpid());
  REQUIRE(mkdir(d.c_str(), 0755) == 0);
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  waitpid(dead, nullptr, 0);
  const std::string gone = d + "/isolated-kernel-" + std::to_string(dead);
  const std::string gone_leaf = gone + "-launcher";
  const std::string alive = d + "/isolated-kernel-1";  // pid 1 exists
  const std::string other = d + "/isolated-kernel-notapid";
  for (const auto& p : {gone, gone_leaf, gone + "/nested", alive, other}) REQUIRE(mkdir(p.c_str(), 0755) == 0);
  ik::remove_stale_cgroups(d, getpid());
  CHECK_FALSE(std::filesystem::exists(gone));
  CHECK_FALSE(std::filesystem::exists(gone_leaf));
  CHECK(std::filesystem::exists(alive));
  CHECK(std::filesystem::exists(other));
  rmdir(alive.c_str());
  rmdir(other.c_str());
  CHECK(rmdir(d.c_str()) == 0);
}

TEST_CASE("cgroup: the rlimit fallback of --limits=auto is decided by the planner and printed") {
  ik::Options o;
  o.limits = mem_and_nproc();
  o.limits.nofile = 32;
  ik::HostInfo host;
  host.uid = host.gid = 1000;
  host.user = host.group = "alice";
  host.home = host.cwd = "/tmp";
  host.shell = "/bin/sh";
  host.fs = std::make_shared<ik::MemoryFs>(ik::MemoryFs::debian());
  host.cgroup = delegated_scope();
  auto plan = ik::build_plan(o, host);
  REQUIRE(plan);
  REQUIRE(plan->cgroup.use);
  REQUIRE(plan->rlimit_fallback);
  // Every limit by setrlimit, as --limits=rlimit would do it.
  CHECK(*plan->rlimit_fallback->rlimits.memory_bytes == *o.limits.memory_bytes);
  CHECK(*plan->rlimit_fallback->rlimits.nproc == 20);
  CHECK(*plan->rlimit_fallback->rlimits.nofile == 32);
  CHECK(plan->rlimit_fallback->why == "--limits=rlimit");
  auto j = ik::plan_to_json(*plan);
  CHECK(j["cgroup"]["fallback_limit_mechanisms"] == nlohmann::json{{"memory", "rlimit RLIMIT_AS"},
                                                                   {"nproc", "rlimit RLIMIT_NPROC"},
                                                                   {"nofile", "rlimit RLIMIT_NOFILE"}});
  // None where there is nothing to fall back from: --limits=cgroup fails
  // instead, and without a cgroup the rlimits are the plan itself.
  o.limits_via = LimitsVia::kCgroup;
  plan = ik::build_plan(o, host);
  REQUIRE(plan);
  CHECK(plan->cgroup.required);
  CHECK_FALSE(plan->rlimit_fallback);
  CHECK_FALSE(ik::plan_to_json(*plan)["cgroup"].contains("fallback_limit_mechanisms"));
  o.limits_via = LimitsVia::kAuto;
  host.cgroup = CgroupHost{};
  host.cgroup.problem = "no cgroup v2 entry (0::) in /proc/self/cgroup";
  plan = ik::build_plan(o, host);
  REQUIRE(plan);
  CHECK_FALSE(plan->cgroup.use);
  CHECK_FALSE(plan->rlimit_fallback);
}
