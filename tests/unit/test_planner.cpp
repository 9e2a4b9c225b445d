// Options + a made-up HostInfo -> Plan (plan/planner, plan/plan_json).
// The host's files are an in-memory tree (host/memory_fs.hpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "host/memory_fs.hpp"

#include "kernel/launch.hpp"
#include "parse/mount_list.hpp"
#include "common/paths.hpp"
#include "plan/planner.hpp"

using ik::HostInfo;
using ik::MountOp;
using ik::OpKind;
using ik::Options;
using ik::Plan;

namespace {

// A made-up host (host/memory_fs.hpp): a Debian-like system, and under
// T = /srv/ik-unit-plan the tree a test builds: T/home (HOME), T/work (cwd)
// and whatever a test adds. Nothing on the real disk is read or written.
struct Tree {
  std::shared_ptr<ik::MemoryFs> fs = std::make_shared<ik::MemoryFs>(ik::MemoryFs::debian());
  std::string root = "/srv/ik-unit-plan";
  Tree() {
    dir("home");
    dir("work");
  }
  std::string p(const std::string& rel) const { return root + "/" + rel; }
  std::string dir(const std::string& rel) const { return fs->dir(p(rel)); }
  std::string file(const std::string& rel, const std::string& /*content: not read by the planner*/ = {}) const {
    return fs->file(p(rel));
  }
  std::string link(const std::string& rel, const std::string& target) const { return fs->link(p(rel), target); }
};

HostInfo make_host(const Tree& t) {
  HostInfo h;
  h.uid = 1000;
  h.gid = 1000;
  h.user = "alice";
  h.group = "students";
  h.home = t.p("home");
  h.shell = "/bin/bash";
  h.cwd = t.p("work");
  h.fs = t.fs;
  h.env = {{"PATH", "/opt/conda/bin:/usr/bin:/bin"},
           {"LANG", "en_US.UTF-8"},
           {"LC_ALL", "C.UTF-8"},
           {"LANGUAGE", "en"},
           {"TERM", "xterm-256color"},
           {"TZ", "Europe/Helsinki"},
           {"HOME", "/somewhere/else"},
           {"USER", "someone"},
           {"SHELL", "/bin/zsh"},
           {"SECRET_TOKEN", "s3cr3t"},
           {"SSH_AUTH_SOCK", "/run/user/1000/ssh"},
           {"DISPLAY", ":0"},
           {"JPY_PARENT_PID", "4242"}};
  return h;
}

Options with_mounts(const std::string& list) {
  Options o;
  auto m = ik::parse_mount_list(list);
  REQUIRE_MESSAGE(m.ok(), list);
  o.mounts = *m;
  o.mounts_given = true;
  return o;
}

Plan plan_ok(const Options& o, const HostInfo& h, const std::vector<MountOp>& extra = {}) {
  auto r = ik::build_plan(o, h, extra);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? std::string() : r.error().describe()));
  return *r;
}

ik::Error plan_error(const Options& o, const HostInfo& h) {
  auto r = ik::build_plan(o, h);
  REQUIRE_MESSAGE(!r.ok(), "build_plan should have failed");
  return r.error();
}

std::vector<size_t> indexes_at(const Plan& p, const std::string& dest) {
  std::vector<size_t> out;
  for (size_t i = 0; i < p.ops.size(); ++i)
    if (p.ops[i].dest == dest) out.push_back(i);
  return out;
}

// The one op at `dest` of `kind`; fails the test when there is not exactly one.
const MountOp& op_at(const Plan& p, const std::string& dest, OpKind kind) {
  const MountOp* found = nullptr;
  int n = 0;
  for (const auto& op : p.ops)
    if (op.dest == dest && op.kind == kind) found = &op, ++n;
  REQUIRE_MESSAGE(n == 1, "expected one " << ik::op_kind_name(kind) << " at " << dest << ", found " << n);
  return *found;
}

size_t index_of(const Plan& p, const std::string& dest, OpKind kind) {
  const MountOp& op = op_at(p, dest, kind);
  return static_cast<size_t>(&op - p.ops.data());
}

bool has_op_at(const Plan& p, const std::string& dest) { return !indexes_at(p, dest).empty(); }

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string l;
  while (std::getline(ss, l)) out.push_back(l);
  return out;
}

std::map<std::string, std::string> env_map(const std::vector<std::string>& env) {
  std::map<std::string, std::string> m;
  for (const auto& kv : env) {
    auto eq = kv.find('=');
    REQUIRE(eq != std::string::npos);
    CHECK_MESSAGE(m.count(kv.substr(0, eq)) == 0, "duplicate " << kv);
    m[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return m;
}

// No op is placed before an op that would cover it (parents first).
void check_parents_first(const Plan& p) {
  for (size_t i = 0; i < p.ops.size(); ++i)
    for (size_t j = i + 1; j < p.ops.size(); ++j) {
      const auto& a = p.ops[i].dest;
      const auto& b = p.ops[j].dest;
      CHECK_MESSAGE(!(a != b && ik::path_is_within(a, b)),
                    a << " (op " << i << ") comes before its parent " << b << " (op " << j << ")");
    }
}

}  // namespace

TEST_CASE("planner: default view") {
  Tree t;
  HostInfo h = make_host(t);
  Options o;  // no mounts at all
  Plan p = plan_ok(o, h);

  SUBCASE("new root first, then read-only /usr") {
    REQUIRE_FALSE(p.ops.empty());
    CHECK(p.ops[0].kind == OpKind::kTmpfs);
    CHECK(p.ops[0].dest == "/");
    const MountOp& usr = op_at(p, "/usr", OpKind::kBind);
    CHECK(usr.src == "/usr");
    CHECK(usr.readonly);
    CHECK(usr.src_is_dir);
  }

  SUBCASE("/bin, /sbin and /lib* mirror the host: symlinks stay symlinks, dirs are ro binds") {
    for (const std::string dir : {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}) {
      CAPTURE(dir);
      auto type = t.fs->lstat_type(dir);
      if (!type) {
        CHECK_FALSE(has_op_at(p, dir));
        continue;
      }
      if (*type == ik::FileType::kSymlink) {
        auto target = t.fs->read_link(dir);
        REQUIRE(target);
        const MountOp& op = op_at(p, dir, OpKind::kSymlink);
        CHECK(op.src == *target);
      } else {
        const MountOp& op = op_at(p, dir, OpKind::kBind);
        CHECK(op.src == dir);
        CHECK(op.readonly);
      }
    }
  }

  SUBCASE("/etc is a fresh dir with curated read-only entries, never secrets") {
    const size_t etc = index_of(p, "/etc", OpKind::kDir);
    for (size_t i = 0; i < p.ops.size(); ++i) {
      const auto& op = p.ops[i];
      if (op.dest == "/etc" || !ik::path_is_within(op.dest, "/etc")) continue;
      CAPTURE(op.dest);
      CHECK(i > etc);
      CHECK((op.kind == OpKind::kBind || op.kind == OpKind::kFile || op.kind == OpKind::kSymlink));
      if (op.kind == OpKind::kBind || op.kind == OpKind::kFile) CHECK(op.readonly);
    }
    for (const std::string secret : {"/etc/shadow", "/etc/gshadow", "/etc/ssh", "/etc/sudoers", "/etc/sudoers.d",
                                     "/etc/machine-id", "/etc/resolv.conf"})
      CHECK_MESSAGE(!has_op_at(p, secret), secret);
    for (const std::string synth : {"/etc/passwd", "/etc/group", "/etc/hostname", "/etc/hosts"}) {
      CAPTURE(synth);
      const MountOp& f = op_at(p, synth, OpKind::kFile);
      CHECK(f.readonly);
      CHECK(f.mode == 0644);
      // Written into the root tmpfs, which is remounted read-only: no bind.
      CHECK(f.in_place);
    }
    if (t.fs->lstat_type("/etc/ld.so.cache")) CHECK(has_op_at(p, "/etc/ld.so.cache"));
  }

  SUBCASE("/etc leaves out what only editors, VCS, logins and account tools read") {
    for (const std::string name :
         {"vim", "gitconfig", "subversion", "mailcap", "magic", "magic.mime", "login.defs", "environment",
          "default/locale", "locale.conf", "ca-certificates", "ca-certificates.conf"}) {
      CAPTURE(name);
      CHECK_FALSE(has_op_at(p, "/etc/" + name));
      CHECK(std::find(ik::curated_etc_entries().begin(), ik::curated_etc_entries().end(), name) ==
            ik::curated_etc_entries().end());
    }
  }

  SUBCASE("/etc entries are bound from their real paths") {
    for (const auto& op : p.ops) {
      if (op.kind != OpKind::kBind || !ik::path_is_within(op.dest, "/etc")) continue;
      CAPTURE(op.dest);
      std::string real;
      REQUIRE(t.fs->real_path(op.dest, real) == 0);
      CHECK(op.src == real);
      auto type = t.fs->stat_type(real);
      REQUIRE(type);
      CHECK(op.src_is_dir == (*type == ik::FileType::kDir));
    }
  }

  SUBCASE("passwd lists root, the caller and nobody only") {
    const MountOp& pw = op_at(p, "/etc/passwd", OpKind::kFile);
    auto l = lines(pw.content);
    REQUIRE(l.size() == 3);
    CHECK(l[0].rfind("root:x:0:0:", 0) == 0);
    CHECK(l[1] == "alice:x:1000:1000::" + t.p("home") + ":/bin/bash");
    CHECK(l[2].rfind("nobody:x:65534:65534:", 0) == 0);
    const MountOp& gr = op_at(p, "/etc/group", OpKind::kFile);
    CHECK(lines(gr.content) == std::vector<std::string>{"root:x:0:", "students:x:1000:", "nogroup:x:65534:"});
    CHECK(op_at(p, "/etc/hostname", OpKind::kFile).content == "isolated\n");
    CHECK(op_at(p, "/etc/hosts", OpKind::kFile).content.find("localhost isolated") != std::string::npos);
  }

  SUBCASE("/proc, /dev, private /tmp and HOME") {
    op_at(p, "/proc", OpKind::kProc);
    op_at(p, "/dev", OpKind::kDev);
    const MountOp& tmp = op_at(p, "/tmp", OpKind::kTmpfs);
    CHECK(tmp.mode == 01777);
    CHECK_FALSE(tmp.owned);
    const MountOp& home = op_at(p, t.p("home"), OpKind::kTmpfs);
    CHECK(home.owned);
    CHECK(home.mode == 0700);
    CHECK(index_of(p, "/tmp", OpKind::kTmpfs) < index_of(p, t.p("home"), OpKind::kTmpfs));
  }

  SUBCASE("nothing else of the host: every bind comes from /usr, /etc or a system dir") {
    for (const auto& op : p.ops) {
      if (op.kind != OpKind::kBind) continue;
      CAPTURE(op.dest);
      CHECK(op.readonly);
      CHECK((ik::path_is_within(op.dest, "/usr") || ik::path_is_within(op.dest, "/etc") || op.dest == "/bin" ||
             op.dest == "/sbin" || op.dest.rfind("/lib", 0) == 0));
    }
    CHECK_FALSE(has_op_at(p, t.p("work")));
  }

  SUBCASE("parents come before children") { check_parents_first(p); }

  SUBCASE("plan settings") {
    CHECK(p.id.outer_uid == 1000);
    CHECK(p.id.inner_uid == 1000);
    CHECK(p.id.inner_gid == 1000);
    CHECK(p.id.user == "alice");
    CHECK(p.id.home == t.p("home"));
    CHECK(p.new_net);
    CHECK(p.hostname == "isolated");
    CHECK(p.seccomp);
    CHECK(p.cwd == t.p("work"));
    CHECK(p.build_dir == "/tmp");
    CHECK(p.tmpfs_size == 1ull << 30);
    // No program given: the caller's $SHELL.
    CHECK(p.argv == std::vector<std::string>{"/bin/zsh"});
  }
}

TEST_CASE("planner: no HOME tmpfs when HOME is /nonexistent") {
  Tree t;
  HostInfo h = make_host(t);
  h.home = "/nonexistent";
  Plan p = plan_ok(Options{}, h);
  CHECK_FALSE(has_op_at(p, "/nonexistent"));
  for (const auto& op : p.ops) CHECK_FALSE(op.owned);
}

TEST_CASE("planner: --share-net adds resolv.conf and keeps the network") {
  Tree t;
  Options o;
  o.net = ik::NetMode::kShare;
  Plan p = plan_ok(o, make_host(t));
  CHECK_FALSE(p.new_net);
  if (t.fs->lstat_type("/etc/resolv.conf")) CHECK(has_op_at(p, "/etc/resolv.conf"));
}

TEST_CASE("planner: id maps: one line, or root's identity map of all its ids") {
  Tree t;
  const ik::IdExtent all{0, 0, 4294967295u};
  SUBCASE("an unprivileged caller maps its own ids only, --root or not") {
    for (bool as_root : {false, true}) {
      Options o;
      o.as_root = as_root;
      Plan p = plan_ok(o, make_host(t));
      CHECK(p.id.maps.uid_map == std::vector<ik::IdExtent>{{as_root ? 0u : 1000u, 1000, 1}});
      CHECK(p.id.maps.gid_map == std::vector<ik::IdExtent>{{as_root ? 0u : 1000u, 1000, 1}});
      CHECK_FALSE(p.id.maps.full);
    }
  }
  SUBCASE("root with CAP_SETUID/CAP_SETGID: every id of its namespace, mapped to itself") {
    HostInfo h = make_host(t);
    h.uid = h.gid = 0;
    h.ids.uids = h.ids.gids = {all};
    Plan p = plan_ok(Options{}, h);
    CHECK(p.id.maps.uid_map == std::vector<ik::IdExtent>{all});
    CHECK(p.id.maps.gid_map == std::vector<ik::IdExtent>{all});
    CHECK(p.id.maps.full);
    CHECK(p.id.inner_uid == 0);
    auto j = ik::plan_to_json(p);
    CHECK(j["identity"]["uid_map"] == nlohmann::json::array({"0 0 4294967295"}));
  }
  SUBCASE("root of a container: the ids its namespace has, seen from inside it") {
    ik::MappableIds ids;
    ids.uids = ik::parse_id_map("         0     100000      65536\n");
    ids.gids = ik::parse_id_map("0 100000 65536\n70000 300000 10\n");
    auto m = ik::choose_id_maps(0, 0, 0, 0, ids);
    CHECK(m.uid_map == std::vector<ik::IdExtent>{{0, 0, 65536}});
    CHECK(m.gid_map == std::vector<ik::IdExtent>{{0, 0, 65536}, {70000, 70000, 10}});
    CHECK(ik::id_map_text(m.gid_map) == "0 0 65536\n70000 70000 10\n");
  }
  SUBCASE("never when the ids change inside (an identity map is only about reach)") {
    ik::MappableIds ids{{all}, {all}};
    auto m = ik::choose_id_maps(1000, 1000, 0, 0, ids);
    CHECK(m.uid_map == std::vector<ik::IdExtent>{{0, 1000, 1}});
    CHECK_FALSE(m.full);
  }
  SUBCASE("parse_id_map skips what it cannot read") {
    CHECK(ik::parse_id_map("").empty());
    CHECK(ik::parse_id_map("x y z\n0 0 0\n1 2\n").empty());
    CHECK(ik::parse_id_map("5 6 7").size() == 1);
    // Beyond 32 bits, a sign, a blank line: skipped; the lines around kept.
    CHECK(ik::parse_id_map("0 0 4294967296\n-1 0 1\n\n0 0 4294967295\n\t7\t8\t9\n") ==
          std::vector<ik::IdExtent>{{0, 0, 4294967295u}, {7, 8, 9}});
    CHECK(ik::parse_id_map("1 2").empty());
    CHECK(ik::parse_id_map("1 2\n3").empty());
    // What the kernel writes: right-aligned in 10 columns.
    CHECK(ik::parse_id_map("         0          0 4294967295\n") == std::vector<ik::IdExtent>{{0, 0, 4294967295u}});
  }
}

TEST_CASE("planner: --root gives inner uid 0") {
  Tree t;
  Options o;
  o.as_root = true;
  Plan p = plan_ok(o, make_host(t));
  CHECK(p.id.inner_uid == 0);
  CHECK(p.id.inner_gid == 0);
  CHECK(p.id.outer_uid == 1000);
  CHECK(p.id.outer_gid == 1000);
  auto pw = lines(op_at(p, "/etc/passwd", OpKind::kFile).content);
  REQUIRE(pw.size() == 2);
  CHECK(pw[0] == "root:x:0:0::" + t.p("home") + ":/bin/bash");
  CHECK(pw[1].rfind("nobody:", 0) == 0);
  auto gr = lines(op_at(p, "/etc/group", OpKind::kFile).content);
  CHECK(gr == std::vector<std::string>{"root:x:0:", "nogroup:x:65534:"});
  auto env = env_map(p.env);
  CHECK(env["USER"] == "root");
  CHECK(env["LOGNAME"] == "root");
  CHECK(env["HOME"] == t.p("home"));
}

TEST_CASE("planner: user mounts are ordered parent-before-child whatever order given") {
  Tree t;
  t.dir("a/b/c");
  const std::string a = t.p("a"), b = t.p("a/b"), c = t.p("a/b/c");
  std::vector<std::string> entries = {a, "ro:" + b, c};
  std::sort(entries.begin(), entries.end());
  do {
    std::string list = entries[0] + " " + entries[1] + " " + entries[2];
    CAPTURE(list);
    Plan p = plan_ok(with_mounts(list), make_host(t));
    const size_t ia = index_of(p, a, OpKind::kBind);
    const size_t ib = index_of(p, b, OpKind::kBind);
    const size_t ic = index_of(p, c, OpKind::kBind);
    CHECK(ia < ib);
    CHECK(ib < ic);
    CHECK(ia > index_of(p, "/tmp", OpKind::kTmpfs));
    CHECK(p.ops[ib].readonly);
    CHECK_FALSE(p.ops[ia].readonly);
    CHECK(p.ops[ia].src == a);
    check_parents_first(p);
  } while (std::next_permutation(entries.begin(), entries.end()));
}

TEST_CASE("planner: equal depth keeps the given order (later wins)") {
  Tree t;
  const std::string s1 = t.dir("src1"), s2 = t.dir("src2");
  t.dir("d1");
  t.dir("d2");
  SUBCASE("same destination twice") {
    Plan p = plan_ok(with_mounts(t.p("x") + "=" + s1 + " ro:" + t.p("x") + "=" + s2), make_host(t));
    auto at = indexes_at(p, t.p("x"));
    REQUIRE(at.size() == 2);
    CHECK(p.ops[at[0]].src == s1);
    CHECK_FALSE(p.ops[at[0]].readonly);
    CHECK(p.ops[at[1]].src == s2);
    CHECK(p.ops[at[1]].readonly);
  }
  SUBCASE("siblings keep their order") {
    Plan p = plan_ok(with_mounts(t.p("d2") + " " + t.p("d1")), make_host(t));
    CHECK(index_of(p, t.p("d2"), OpKind::kBind) < index_of(p, t.p("d1"), OpKind::kBind));
    Plan q = plan_ok(with_mounts(t.p("d1") + " " + t.p("d2")), make_host(t));
    CHECK(index_of(q, t.p("d1"), OpKind::kBind) < index_of(q, t.p("d2"), OpKind::kBind));
  }
  SUBCASE("a user mount at HOME comes after the private HOME tmpfs") {
    Plan p = plan_ok(with_mounts("~"), make_host(t));
    CHECK(index_of(p, t.p("home"), OpKind::kTmpfs) < index_of(p, t.p("home"), OpKind::kBind));
  }
  SUBCASE("DEST=none after a bind of the same path hides it") {
    Plan p = plan_ok(with_mounts(t.p("d1") + " " + t.p("d1") + "=none"), make_host(t));
    CHECK(index_of(p, t.p("d1"), OpKind::kBind) < index_of(p, t.p("d1"), OpKind::kTmpfs));
  }
}

TEST_CASE("planner: a path typed through a symlink is bound at both paths") {
  Tree t;
  const std::string real = t.dir("m/home/alice");
  t.file("m/home/alice/notes.txt");
  t.dir("u");
  const std::string typed = t.link("u/alice", "../m/home/alice");  // relative link
  SUBCASE("directory") {
    Plan p = plan_ok(with_mounts("ro:" + typed), make_host(t));
    const MountOp& at_typed = op_at(p, typed, OpKind::kBind);
    const MountOp& at_real = op_at(p, real, OpKind::kBind);
    CHECK(at_typed.src == real);
    CHECK(at_real.src == real);
    CHECK(at_typed.readonly);
    CHECK(at_real.readonly);
    CHECK(at_typed.src_is_dir);
    check_parents_first(p);
  }
  SUBCASE("file below the link") {
    const std::string f = typed + "/notes.txt";
    Plan p = plan_ok(with_mounts(f), make_host(t));
    const MountOp& at_typed = op_at(p, f, OpKind::kBind);
    const MountOp& at_real = op_at(p, real + "/notes.txt", OpKind::kBind);
    CHECK(at_typed.src == real + "/notes.txt");
    CHECK(at_real.src == real + "/notes.txt");
    CHECK_FALSE(at_typed.src_is_dir);
    CHECK_FALSE(at_real.src_is_dir);
  }
  SUBCASE("DEST=SRC through a symlink binds only at DEST") {
    t.dir("view");
    Plan p = plan_ok(with_mounts(t.p("view") + "=" + typed), make_host(t));
    const MountOp& v = op_at(p, t.p("view"), OpKind::kBind);
    CHECK(v.src == real);
    CHECK_FALSE(has_op_at(p, real));
    CHECK_FALSE(has_op_at(p, typed));
  }
  SUBCASE("no symlink: a single bind") {
    Plan p = plan_ok(with_mounts(real), make_host(t));
    CHECK(indexes_at(p, real).size() == 1);
  }
}

TEST_CASE("planner: a symlink to / must not replace the new root") {
  // Mounting "/" is refused; reaching it through a symlink must not bind the
  // whole host over the new root either.
  Tree t;
  const std::string to_root = t.link("rootlink", "/");
  auto r = ik::build_plan(with_mounts(to_root), make_host(t));
  if (r.ok()) {
    for (const auto& op : r->ops) {
      CAPTURE(op.dest);
      CHECK_FALSE((op.dest == "/" && op.kind == OpKind::kBind));
    }
  } else {
    CHECK(r.error().exit_code == ik::kExitUsage);
  }
}

TEST_CASE("planner: DEST=none") {
  Tree t;
  const std::string file = t.file("secret.txt", "top secret");
  const std::string dir = t.dir("private");
  SUBCASE("on a file: an empty read-only file") {
    Plan p = plan_ok(with_mounts(file + "=none"), make_host(t));
    const MountOp& op = op_at(p, file, OpKind::kEmpty);
    CHECK(op.readonly);
    CHECK(op.src.empty());
    CHECK(op.why == "--mnt " + file + "=none");
  }
  SUBCASE("on a directory: an empty tmpfs") {
    Plan p = plan_ok(with_mounts(dir + "=none"), make_host(t));
    const MountOp& op = op_at(p, dir, OpKind::kTmpfs);
    CHECK_FALSE(op.owned);
  }
  SUBCASE("on a missing path: an empty tmpfs") {
    Plan p = plan_ok(with_mounts(t.p("nothing") + "=none"), make_host(t));
    op_at(p, t.p("nothing"), OpKind::kTmpfs);
  }
  SUBCASE("relative and ~ destinations") {
    t.file("home/.netrc");
    t.file("work/token");
    Plan p = plan_ok(with_mounts("~/.netrc=none token=none"), make_host(t));
    op_at(p, t.p("home/.netrc"), OpKind::kEmpty);
    op_at(p, t.p("work/token"), OpKind::kEmpty);
  }
  SUBCASE("on a file seen through a DEST=SRC bind: still an empty file") {
    // Inside, view/secret.txt is the file src/secret.txt; the host has no
    // view/secret.txt at all. A tmpfs cannot be mounted over a file.
    t.file("src/secret.txt");
    t.dir("view");
    Plan p =
        plan_ok(with_mounts(t.p("view") + "=" + t.p("src") + " " + t.p("view/secret.txt") + "=none"), make_host(t));
    CHECK(has_op_at(p, t.p("view/secret.txt")));
    for (size_t i : indexes_at(p, t.p("view/secret.txt"))) CHECK(p.ops[i].kind == OpKind::kEmpty);
  }
}

TEST_CASE("planner: a file is written in place only where the tmpfs holding it gives its access") {
  Tree t;
  SUBCASE("a writable tmpfs over /etc: the read-only synthesized files are bound") {
    Plan p = plan_ok(with_mounts("/etc=none"), make_host(t));
    op_at(p, "/etc", OpKind::kTmpfs);
    for (const std::string synth : {"/etc/passwd", "/etc/group", "/etc/hostname", "/etc/hosts"}) {
      CAPTURE(synth);
      const MountOp& f = op_at(p, synth, OpKind::kFile);
      CHECK(f.readonly);
      CHECK_FALSE(f.in_place);
    }
  }
  SUBCASE("DEST=none over a synthesized file on the root: written in place, after it") {
    Plan p = plan_ok(with_mounts("/etc/hosts=none"), make_host(t));
    const size_t f = index_of(p, "/etc/hosts", OpKind::kFile);
    const size_t e = index_of(p, "/etc/hosts", OpKind::kEmpty);
    CHECK(f < e);
    CHECK(p.ops[e].readonly);
    CHECK(p.ops[e].in_place);
  }
  SUBCASE("DEST=none over a file inside a host bind: bound") {
    t.file("work/token");
    Plan p = plan_ok(with_mounts(". token=none"), make_host(t));
    CHECK_FALSE(op_at(p, t.p("work/token"), OpKind::kEmpty).in_place);
  }
  SUBCASE("a kernel's writable connection file in its private runtime dir: written in place") {
    const std::string cf = t.p("runtime/kernel-1.json");
    Plan p = plan_ok(with_mounts("."), make_host(t), ik::kernel_ops(cf, "{}", true, t.p("work")));
    op_at(p, t.p("runtime"), OpKind::kTmpfs);
    const MountOp& f = op_at(p, cf, OpKind::kFile);
    CHECK_FALSE(f.readonly);
    CHECK(f.mode == 0600);
    CHECK(f.in_place);
  }
  SUBCASE("a kernel's connection file in its working directory: bound over the host's") {
    const std::string cf = t.p("work/kernel-1.json");
    t.file("work/kernel-1.json");
    Plan p = plan_ok(with_mounts("."), make_host(t), ik::kernel_ops(cf, "{}", true, t.p("work")));
    op_at(p, t.p("work"), OpKind::kBind);
    CHECK_FALSE(op_at(p, cf, OpKind::kFile).in_place);
  }
  SUBCASE("a writable file on the root, or a read-only one in a writable tmpfs: bound") {
    MountOp rw{};
    rw.kind = OpKind::kFile;
    rw.dest = "/rw.txt";
    rw.content = "x";
    rw.mode = 0644;
    MountOp ro = rw;
    ro.dest = "/tmp/ro.txt";
    ro.readonly = true;
    Plan p = plan_ok(Options{}, make_host(t), {rw, ro});
    CHECK_FALSE(op_at(p, "/rw.txt", OpKind::kFile).in_place);
    CHECK_FALSE(op_at(p, "/tmp/ro.txt", OpKind::kFile).in_place);
  }
  SUBCASE("through the sandbox's own symlinks: the holder is found at the real path") {
    // /lib -> usr/lib on merged-/usr hosts: a file under /lib lies in the /usr bind.
    if (t.fs->lstat_type("/lib") != ik::FileType::kSymlink) return;
    MountOp f{};
    f.kind = OpKind::kFile;
    f.dest = "/lib/os-release";
    f.readonly = true;
    Plan p = plan_ok(Options{}, make_host(t), {f});
    CHECK_FALSE(op_at(p, "/lib/os-release", OpKind::kFile).in_place);
  }
}

TEST_CASE("planner: the curated /etc is sealed read-only in one go unless something below must stay writable") {
  Tree t;
  SUBCASE("default view: sealed") {
    Plan p = plan_ok(Options{}, make_host(t));
    CHECK(op_at(p, "/etc", OpKind::kDir).readonly);
    CHECK(ik::plan_to_json(p)["mounts"][index_of(p, "/etc", OpKind::kDir)]["access"] ==
          "ro (sealed, with everything below)");
  }
  SUBCASE("a read-only user bind under /etc keeps the seal") {
    t.file("conf/app.conf");
    Plan p = plan_ok(with_mounts("ro:/etc/app.conf=" + t.p("conf/app.conf")), make_host(t));
    CHECK(op_at(p, "/etc", OpKind::kDir).readonly);
  }
  SUBCASE("a writable bind under /etc: not sealed") {
    t.file("conf/app.conf");
    Plan p = plan_ok(with_mounts("rw:/etc/app.conf=" + t.p("conf/app.conf")), make_host(t));
    CHECK_FALSE(op_at(p, "/etc", OpKind::kDir).readonly);
  }
  SUBCASE("a tmpfs over /etc (DEST=none): not sealed") {
    Plan p = plan_ok(with_mounts("/etc=none"), make_host(t));
    CHECK_FALSE(op_at(p, "/etc", OpKind::kDir).readonly);
  }
  SUBCASE("a writable tmpfs below /etc (DEST=none on a directory): not sealed") {
    Plan p = plan_ok(with_mounts("/etc/xdg=none"), make_host(t));
    CHECK_FALSE(op_at(p, "/etc", OpKind::kDir).readonly);
  }
  SUBCASE("--share-net adds resolv.conf, still read-only: sealed") {
    Options o;
    o.net = ik::NetMode::kShare;
    CHECK(op_at(plan_ok(o, make_host(t)), "/etc", OpKind::kDir).readonly);
  }
}

TEST_CASE("planner: a mount point missing inside a host bind is rejected") {
  Tree t;
  t.dir("proj/data");
  const std::string other = t.dir("other");
  const std::string proj = t.p("proj");
  SUBCASE("child of a user bind, either order") {
    for (const std::string& list : {proj + " " + proj + "/missing=" + other, proj + "/missing=" + other + " " + proj}) {
      CAPTURE(list);
      auto e = plan_error(with_mounts(list), make_host(t));
      CHECK(e.exit_code == ik::kExitUsage);
      CHECK(e.describe().find("mount point " + proj + "/missing") != std::string::npos);
      CHECK(e.describe().find("does not exist inside " + proj) != std::string::npos);
    }
  }
  SUBCASE("existing mount point is fine, and apply is told never to create it") {
    Plan p = plan_ok(with_mounts(proj + " ro:" + proj + "/data=" + other), make_host(t));
    CHECK(index_of(p, proj, OpKind::kBind) < index_of(p, proj + "/data", OpKind::kBind));
    CHECK(op_at(p, proj + "/data", OpKind::kBind).point_on_host);
    CHECK_FALSE(op_at(p, proj, OpKind::kBind).point_on_host);  // on the root tmpfs
  }
  SUBCASE("inside the read-only /usr") {
    auto e = plan_error(with_mounts("/usr/ik-unit-no-such-dir=" + other), make_host(t));
    CHECK(e.describe().find("/usr/ik-unit-no-such-dir") != std::string::npos);
    CHECK(e.describe().find("/usr") != std::string::npos);
  }
  SUBCASE("through a system symlink such as /lib -> usr/lib") {
    if (t.fs->lstat_type("/lib") == ik::FileType::kSymlink) {
      auto e = plan_error(with_mounts("/lib/ik-unit-no-such-dir=" + other), make_host(t));
      CHECK(e.describe().find("/lib/ik-unit-no-such-dir") != std::string::npos);
    }
  }
  SUBCASE("inside a DEST=SRC bind the SRC side is checked") {
    t.dir("view");
    t.dir("other/sub");
    // view is bound from other; other/sub exists, proj/sub does not matter.
    Plan p = plan_ok(with_mounts(t.p("view") + "=" + other + " " + t.p("view/sub") + "=" + proj), make_host(t));
    op_at(p, t.p("view/sub"), OpKind::kBind);
    auto e = plan_error(with_mounts(t.p("view") + "=" + other + " " + t.p("view/data") + "=" + proj), make_host(t));
    CHECK(e.describe().find(t.p("view/data")) != std::string::npos);
  }
  SUBCASE("inside a tmpfs (HOME) anything goes") {
    Plan p = plan_ok(with_mounts("~/not/yet/there=" + other), make_host(t));
    op_at(p, t.p("home/not/yet/there"), OpKind::kBind);
  }
}

TEST_CASE("planner: relative paths and ~ resolve against HostInfo") {
  Tree t;
  t.dir("work/sub");
  t.dir("a");
  t.dir("home/course");
  HostInfo h = make_host(t);
  Plan p = plan_ok(with_mounts(". sub ../a ro:~/course"), h);
  CHECK(op_at(p, t.p("work"), OpKind::kBind).src == t.p("work"));
  CHECK(op_at(p, t.p("work/sub"), OpKind::kBind).src == t.p("work/sub"));
  CHECK(op_at(p, t.p("a"), OpKind::kBind).src == t.p("a"));
  const MountOp& course = op_at(p, t.p("home/course"), OpKind::kBind);
  CHECK(course.readonly);
  CHECK(course.why == "--mnt ro:~/course");
  check_parents_first(p);

  SUBCASE("DEST=SRC, both relative") {
    Plan q = plan_ok(with_mounts("dst=../a"), h);
    CHECK(op_at(q, t.p("work/dst"), OpKind::kBind).src == t.p("a"));
  }
  SUBCASE("a different cwd changes the result") {
    h.cwd = t.p("a");
    Plan q = plan_ok(with_mounts("."), h);
    op_at(q, t.p("a"), OpKind::kBind);
    CHECK(q.cwd == t.p("a"));
  }
  SUBCASE("--chdir resolves like a mount path") {
    Options o = with_mounts(".");
    o.chdir = "sub";
    CHECK(plan_ok(o, h).cwd == t.p("work/sub"));
    o.chdir = "~/course";
    CHECK(plan_ok(o, h).cwd == t.p("home/course"));
    o.chdir = "/abs/../x";
    CHECK(plan_ok(o, h).cwd == "/x");
  }
}

TEST_CASE("planner: user mount errors") {
  Tree t;
  HostInfo h = make_host(t);
  SUBCASE("missing source names the entry") {
    auto e = plan_error(with_mounts("ro:nope"), h);
    CHECK(e.exit_code == ik::kExitUsage);
    CHECK(e.describe().find("ro:nope") != std::string::npos);
    CHECK(e.describe().find(t.p("work/nope")) != std::string::npos);
  }
  SUBCASE("the whole root") {
    auto e = plan_error(with_mounts("/"), h);
    CHECK(e.exit_code == ik::kExitUsage);
    CHECK(e.describe().find("root") != std::string::npos);
    CHECK(plan_error(with_mounts("/=none"), h).exit_code == ik::kExitUsage);
    CHECK(plan_error(with_mounts("/usr/..=" + t.p("work")), h).exit_code == ik::kExitUsage);
  }
  SUBCASE("unknown ~user") {
    auto e = plan_error(with_mounts("~nosuchuser_ik_unit/x"), h);
    CHECK(e.exit_code == ik::kExitUsage);
    CHECK(e.describe().find("nosuchuser_ik_unit") != std::string::npos);
  }
  SUBCASE("build dir must exist") {
    Options o;
    o.build_dir = t.p("no-build-dir");
    auto e = plan_error(o, h);
    CHECK(e.exit_code == ik::kExitUsage);
    CHECK(e.describe().find(t.p("no-build-dir")) != std::string::npos);
    o.build_dir = t.file("a-file");
    CHECK(plan_error(o, h).exit_code == ik::kExitUsage);
  }
}

TEST_CASE("planner: extra ops are ordered with the user's mounts") {
  Tree t;
  t.dir("work/sub");
  MountOp extra{};
  extra.kind = OpKind::kTmpfs;
  extra.dest = t.p("work/sub/runtime");
  extra.why = "runtime dir";
  // The extra tmpfs sits under a user bind; its mount point must exist.
  t.dir("work/sub/runtime");
  Plan p = plan_ok(with_mounts("sub ."), make_host(t), {extra});
  const size_t iw = index_of(p, t.p("work"), OpKind::kBind);
  const size_t is = index_of(p, t.p("work/sub"), OpKind::kBind);
  const size_t ir = index_of(p, t.p("work/sub/runtime"), OpKind::kTmpfs);
  CHECK(iw < is);
  CHECK(is < ir);
  CHECK(ir == p.ops.size() - 1);
}

TEST_CASE("planner: environment") {
  Tree t;
  HostInfo h = make_host(t);
  SUBCASE("allow-list only, identity variables set, the host's JPY_PARENT_PID never passes") {
    // The host's JPY_PARENT_PID (4242) must not reach the kernel: ipykernel
    // would poll getppid() and exit under our init. The planner replaces it
    // with 1 ("parent is init: do not poll").
    auto env = env_map(plan_ok(Options{}, h).env);
    std::map<std::string, std::string> expected = {{"HOME", t.p("home")},     {"LANG", "en_US.UTF-8"},
                                                   {"LANGUAGE", "en"},        {"LC_ALL", "C.UTF-8"},
                                                   {"LOGNAME", "alice"},      {"PATH", "/opt/conda/bin:/usr/bin:/bin"},
                                                   {"SHELL", "/bin/bash"},    {"TERM", "xterm-256color"},
                                                   {"TZ", "Europe/Helsinki"}, {"USER", "alice"},
                                                   {"JPY_PARENT_PID", "1"}};
    CHECK(env == expected);
    h.env.erase("JPY_PARENT_PID");
    CHECK(env_map(plan_ok(Options{}, h).env).count("JPY_PARENT_PID") == 0);
  }
  SUBCASE("default PATH when the caller has none") {
    h.env.erase("PATH");
    auto env = env_map(plan_ok(Options{}, h).env);
    CHECK(env["PATH"] == "/usr/local/bin:/usr/bin:/bin");
  }
  SUBCASE("--setenv overrides, --keep-env passes") {
    Options o;
    o.setenv = {{"PATH", "/sandbox/bin"}, {"NEW", "1"}, {"HOME", "/elsewhere"}, {"EMPTY", ""}};
    o.keep_env = {"DISPLAY", "NOT_SET_ANYWHERE"};
    auto env = env_map(plan_ok(o, h).env);
    CHECK(env["PATH"] == "/sandbox/bin");
    CHECK(env["NEW"] == "1");
    CHECK(env["HOME"] == "/elsewhere");
    CHECK(env.count("EMPTY") == 1);
    CHECK(env["EMPTY"].empty());
    CHECK(env["DISPLAY"] == ":0");
    CHECK(env.count("NOT_SET_ANYWHERE") == 0);
    CHECK(env.count("SECRET_TOKEN") == 0);
    CHECK(env.count("SSH_AUTH_SOCK") == 0);
  }
  SUBCASE("later --setenv of the same name wins") {
    Options o;
    o.setenv = {{"X", "1"}, {"X", "2"}};
    CHECK(env_map(plan_ok(o, h).env)["X"] == "2");
  }
  SUBCASE("the host's JPY_PARENT_PID stays out even when asked for") {
    Options o;
    o.keep_env = {"JPY_PARENT_PID"};
    CHECK(env_map(plan_ok(o, h).env)["JPY_PARENT_PID"] == "1");
    Options s;
    s.setenv = {{"JPY_PARENT_PID", "4242"}};
    CHECK(env_map(plan_ok(s, h).env)["JPY_PARENT_PID"] == "1");
    h.env.erase("JPY_PARENT_PID");
    CHECK(env_map(plan_ok(o, h).env).count("JPY_PARENT_PID") == 0);
    CHECK(env_map(plan_ok(s, h).env).count("JPY_PARENT_PID") == 0);
  }
  SUBCASE("build_environment directly") {
    ik::Identity id;
    id.inner_uid = 1000;
    id.user = "alice";
    id.home = "/h";
    id.shell = "/bin/sh";
    auto env = env_map(ik::build_environment(Options{}, h, id));
    CHECK(env["HOME"] == "/h");
    CHECK(env["SHELL"] == "/bin/sh");
    CHECK(env["USER"] == "alice");
  }
}

TEST_CASE("planner: argv, hostname, limits and switches pass through") {
  Tree t;
  Options o;
  o.argv = {"python3", "-c", "print(1)"};
  o.hostname = "grader";
  o.seccomp = "off";
  o.allow_userns = true;
  o.verbose = 2;
  o.tmpfs_size = 64ull << 20;
  o.limits.memory_bytes = 1ull << 30;
  o.limits.wall_seconds = 60;
  Plan p = plan_ok(o, make_host(t));
  CHECK(p.argv == o.argv);
  CHECK(p.hostname == "grader");
  CHECK(op_at(p, "/etc/hostname", OpKind::kFile).content == "grader\n");
  CHECK_FALSE(p.seccomp);
  CHECK(p.allow_userns);
  CHECK(p.verbose == 2);
  CHECK(p.tmpfs_size == 64ull << 20);
  CHECK(*p.limits.memory_bytes == 1ull << 30);
  CHECK(*p.limits.wall_seconds == 60);
  CHECK_FALSE(p.limits.cpu_seconds);

  HostInfo h = make_host(t);
  h.env.erase("SHELL");
  CHECK(plan_ok(Options{}, h).argv == std::vector<std::string>{"/bin/sh"});
}

TEST_CASE("plan_to_json has the mounts in plan order") {
  Tree t;
  t.dir("work/sub");
  t.file("work/f.txt");
  Options o = with_mounts("ro:sub . f.txt=none");
  o.limits.nproc = 10;
  Plan p = plan_ok(o, make_host(t));
  auto j = ik::plan_to_json(p);
  REQUIRE(j["mounts"].is_array());
  REQUIRE(j["mounts"].size() == p.ops.size());
  for (size_t i = 0; i < p.ops.size(); ++i) {
    const auto& op = p.ops[i];
    const auto& m = j["mounts"][i];
    CAPTURE(op.dest);
    CHECK(m["dest"] == op.dest);
    CHECK(m["op"] == ik::op_kind_name(op.kind));
    CHECK(m["why"] == op.why);
    if (op.kind == OpKind::kBind) {
      CHECK(m["src"] == op.src);
      CHECK(m["type"] == (op.src_is_dir ? "dir" : "file"));
      CHECK(m["access"] == (op.readonly ? "ro" : "rw"));
    } else {
      CHECK_FALSE(m.contains("src"));
    }
    if (op.kind == OpKind::kSymlink) CHECK(m["target"] == op.src);
    if (op.kind == OpKind::kFile) CHECK(m["bytes"] == op.content.size());
    if (op.kind == OpKind::kFile || op.kind == OpKind::kEmpty) CHECK(m["how"] == (op.in_place ? "write" : "bind"));
    else CHECK_FALSE(m.contains("how"));
  }
  CHECK(j["mounts"][index_of(p, "/etc/passwd", OpKind::kFile)]["how"] == "write");
  CHECK(j["mounts"][index_of(p, t.p("work/f.txt"), OpKind::kEmpty)]["how"] == "bind");
  CHECK(j["mounts"][0]["dest"] == "/");
  CHECK(j["mounts"][0]["op"] == "tmpfs");
  // The user's entries, in the planned order.
  std::vector<std::string> user;
  for (const auto& m : j["mounts"])
    if (m["why"].get<std::string>().rfind("--mnt ", 0) == 0) user.push_back(m["dest"].get<std::string>());
  CHECK(user == std::vector<std::string>{t.p("work"), t.p("work/sub"), t.p("work/f.txt")});
  CHECK(j["identity"]["uid"] == 1000);
  CHECK(j["identity"]["user"] == "alice");
  CHECK(j["network"] == "none (lo only)");
  CHECK(j["limits"] == nlohmann::json{{"nproc", 10}});
  CHECK(j["cwd"] == t.p("work"));
  CHECK(j["env"].size() == p.env.size());
  CHECK(j["seccomp"] == "default");
  bool has_net = std::find(j["namespaces"].begin(), j["namespaces"].end(), "net") != j["namespaces"].end();
  CHECK(has_net);
}

TEST_CASE("op_kind_name") {
  CHECK(std::string(ik::op_kind_name(OpKind::kTmpfs)) == "tmpfs");
  CHECK(std::string(ik::op_kind_name(OpKind::kBind)) == "bind");
  CHECK(std::string(ik::op_kind_name(OpKind::kDir)) == "dir");
  CHECK(std::string(ik::op_kind_name(OpKind::kSymlink)) == "symlink");
  CHECK(std::string(ik::op_kind_name(OpKind::kFile)) == "file");
  CHECK(std::string(ik::op_kind_name(OpKind::kEmpty)) == "empty-file");
  CHECK(std::string(ik::op_kind_name(OpKind::kProc)) == "proc");
  CHECK(std::string(ik::op_kind_name(OpKind::kDev)) == "dev");
}

TEST_CASE("planner: /etc entries below a linked subdirectory, or in a linked /etc, are bound from their real path") {
  // The planner skips realpath(3) when no directory on the way is a link;
  // these hosts have one.
  auto host_with = [](const std::function<void(ik::MemoryFs&)>& build) {
    Tree t;
    t.fs = std::make_shared<ik::MemoryFs>();
    for (const char* d : {"/usr/bin", "/usr/lib", "/tmp", "/srv/ik-unit-plan/home", "/srv/ik-unit-plan/work"})
      t.fs->dir(d);
    build(*t.fs);
    return make_host(t);
  };
  SUBCASE("plain: the path itself") {
    Tree t;
    Plan p = plan_ok(Options{}, make_host(t));
    CHECK(op_at(p, "/etc/ssl/certs", OpKind::kBind).src == "/etc/ssl/certs");
    CHECK(op_at(p, "/etc/ssl/openssl.cnf", OpKind::kBind).src == "/etc/ssl/openssl.cnf");
    CHECK(op_at(p, "/etc/ld.so.cache", OpKind::kBind).src == "/etc/ld.so.cache");
  }
  SUBCASE("/etc/ssl a link") {
    HostInfo h = host_with([](ik::MemoryFs& fs) {
      fs.dir("/usr/share/ca/certs");
      fs.file("/usr/share/ca/openssl.cnf");
      fs.file("/etc/ld.so.cache");
      fs.link("/etc/ssl", "../usr/share/ca");
    });
    Plan p = plan_ok(Options{}, h);
    const MountOp& certs = op_at(p, "/etc/ssl/certs", OpKind::kBind);
    CHECK(certs.src == "/usr/share/ca/certs");
    CHECK(certs.src_is_dir);
    const MountOp& cnf = op_at(p, "/etc/ssl/openssl.cnf", OpKind::kBind);
    CHECK(cnf.src == "/usr/share/ca/openssl.cnf");
    CHECK_FALSE(cnf.src_is_dir);
    CHECK(op_at(p, "/etc/ld.so.cache", OpKind::kBind).src == "/etc/ld.so.cache");
  }
  SUBCASE("/etc a link") {
    HostInfo h = host_with([](ik::MemoryFs& fs) {
      fs.dir("/private/etc/ssl/certs");
      fs.file("/private/etc/ld.so.cache");
      fs.link("/etc", "private/etc");
    });
    Plan p = plan_ok(Options{}, h);
    CHECK(op_at(p, "/etc/ld.so.cache", OpKind::kBind).src == "/private/etc/ld.so.cache");
    CHECK(op_at(p, "/etc/ssl/certs", OpKind::kBind).src == "/private/etc/ssl/certs");
  }
}
