// The warm pool's split of a cold plan into a waiting plan and the launch
// ops, and its key (pool/split). Real plans from build_plan over an in-memory host.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "host/memory_fs.hpp"
#include "kernel/launch.hpp"
#include "parse/mount_list.hpp"
#include "plan/planner.hpp"
#include "pool/split.hpp"

namespace {

// The host's files are an in-memory tree (host/memory_fs.hpp): a
// Debian-like system and, under root, home, work, other and runtime.
struct PoolTree {
  std::shared_ptr<ik::MemoryFs> fs = std::make_shared<ik::MemoryFs>(ik::MemoryFs::debian());
  std::string root = "/srv/ik-unit-pool";
  PoolTree() {
    for (const char* d : {"home", "work", "other", "runtime"}) fs->dir(root + "/" + d);
  }
};

ik::HostInfo host_in(const PoolTree& t, const std::string& cwd) {
  ik::HostInfo h;
  h.uid = h.gid = 1000;
  h.user = h.group = "alice";
  h.home = t.root + "/home";
  h.shell = "/bin/sh";
  h.cwd = cwd;
  h.fs = t.fs;
  h.env = {{"PATH", "/usr/bin:/bin"}, {"LANG", "C.UTF-8"}, {"JPY_PARENT_PID", "4242"}};
  return h;
}

ik::Options kernel_opts(const std::string& conn) {
  ik::Options o;
  ik::MountEntry dot{};
  dot.text = dot.dest = ".";
  o.mounts = {dot};
  o.mounts_given = true;
  o.argv = {"/usr/bin/python3", "-m", "ipykernel_launcher", "-f", conn};
  return o;
}

struct Split {
  ik::Plan cold, waiting;
};

Split split_at(const PoolTree& t, const std::string& cwd, const std::string& conn) {
  const ik::Options o = kernel_opts(conn);
  const ik::HostInfo h = host_in(t, cwd);
  auto cold = ik::build_plan(o, h, ik::kernel_ops(conn, "{}", true, h.cwd));
  REQUIRE(cold.ok());
  auto waiting = ik::build_plan(o, h, ik::pool::waiting_extra_ops());
  REQUIRE(waiting.ok());
  ik::pool::strip_launch_parts(*waiting, cwd);
  waiting->argv = ik::pool::argv_template(cold->argv, conn);
  return {*cold, *waiting};
}

}  // namespace

TEST_CASE("pool: the launch ops are the cwd bind and the connection file, in plan order") {
  PoolTree t;
  const std::string conn = t.root + "/runtime/kernel-1.json";
  Split s = split_at(t, t.root + "/work", conn);
  auto ops = ik::pool::launch_ops(s.cold, s.waiting);
  REQUIRE(ops.ok());
  std::vector<std::string> dests;
  for (const auto& op : *ops) dests.push_back(op.dest);
  CHECK(std::find(dests.begin(), dests.end(), t.root + "/work") != dests.end());
  CHECK(std::find(dests.begin(), dests.end(), conn) != dests.end());
  CHECK(std::find(dests.begin(), dests.end(), t.root + "/runtime") != dests.end());
  CHECK(std::find(dests.begin(), dests.end(), std::string("/usr")) == dests.end());
  CHECK(s.waiting.cwd.empty());
}

TEST_CASE("pool: the key ignores the launch (cwd, connection file, JPY_PARENT_PID) but not the kernelspec") {
  PoolTree t;
  Split a = split_at(t, t.root + "/work", t.root + "/runtime/kernel-1.json");
  Split b = split_at(t, t.root + "/other", t.root + "/runtime/kernel-2.json");
  CHECK(a.waiting.argv == b.waiting.argv);
  CHECK(ik::pool::pool_key(a.waiting, "w", {}) == ik::pool::pool_key(b.waiting, "w", {}));
  CHECK(ik::pool::pool_key(a.waiting, "w", {}) != ik::pool::pool_key(a.waiting, "other waiter", {}));
  ik::Plan edited = a.waiting;
  edited.env.push_back("IK_EDITED=yes");
  CHECK(ik::pool::pool_key(a.waiting, "w", {}) != ik::pool::pool_key(edited, "w", {}));
  ik::Plan limited = a.waiting;
  limited.limits.cpu_seconds = 10;
  CHECK(ik::pool::pool_key(a.waiting, "w", {}) != ik::pool::pool_key(limited, "w", {}));
  // What the waiter preloads is part of what a kernel was given.
  CHECK(ik::pool::pool_key(a.waiting, "w", {}) != ik::pool::pool_key(a.waiting, "w", {"numpy"}));
  CHECK(ik::pool::pool_key(a.waiting, "w", {"numpy"}) == ik::pool::pool_key(b.waiting, "w", {"numpy"}));
}

TEST_CASE("pool: a launch op round-trips through JSON; other kinds are refused") {
  ik::MountOp op{};
  op.kind = ik::OpKind::kFile;
  op.dest = "/x/k.json";
  op.content = "{\"key\": 1}";
  op.mode = 0600;
  op.in_place = true;
  auto back = ik::pool::op_from_json(ik::pool::op_to_json(op));
  REQUIRE(back.ok());
  CHECK(ik::pool::op_to_json(*back) == ik::pool::op_to_json(op));
  op.kind = ik::OpKind::kProc;
  CHECK_FALSE(ik::pool::op_from_json(ik::pool::op_to_json(op)).ok());
}

TEST_CASE("pool: argv_template replaces the connection file wherever it appears") {
  auto t = ik::pool::argv_template({"-f", "/r/k.json", "--f=/r/k.json", "x"}, "/r/k.json");
  CHECK(t == std::vector<std::string>{"-f", "{connection_file}", "--f={connection_file}", "x"});
}
