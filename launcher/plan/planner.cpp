#include "plan/planner.hpp"

#include <algorithm>
#include <set>

#include "common/paths.hpp"
#include "parse/mount_list.hpp"

namespace ik {
namespace {

// System directories shown read-only. Merged-/usr symlinks stay symlinks.
const char* const kSystemDirs[] = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};

MountOp make_op(OpKind kind, std::string dest, std::string why) {
  MountOp op{};
  op.kind = kind;
  op.dest = std::move(dest);
  op.why = std::move(why);
  return op;
}

void add_system_dirs(std::vector<MountOp>& ops, const HostFs& fs) {
  for (const char* dir : kSystemDirs) {
    auto type = fs.lstat_type(dir);
    if (!type) continue;
    if (*type == FileType::kSymlink) {
      auto target = fs.read_link(dir);
      if (!target || target->empty()) continue;
      MountOp op = make_op(OpKind::kSymlink, dir, "system");
      op.src = *target;
      ops.push_back(std::move(op));
    } else if (*type == FileType::kDir) {
      MountOp op = make_op(OpKind::kBind, dir, "system");
      op.src = dir;
      op.readonly = true;
      ops.push_back(std::move(op));
    }
  }
}

std::string passwd_content(const HostInfo& host, const Identity& id) {
  std::string s;
  if (id.inner_uid != 0) s += "root:x:0:0:root:/root:/usr/sbin/nologin\n";
  std::string name = id.inner_uid == 0 ? "root" : id.user;
  s += name + ":x:" + std::to_string(id.inner_uid) + ":" + std::to_string(id.inner_gid) + "::" + id.home + ":" +
       id.shell + "\n";
  s += "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
  (void)host;
  return s;
}

std::string group_content(const HostInfo& host, const Identity& id) {
  std::string s;
  if (id.inner_gid != 0) s += "root:x:0:\n";
  std::string name = id.inner_gid == 0 ? "root" : host.group;
  s += name + ":x:" + std::to_string(id.inner_gid) + ":\n";
  s += "nogroup:x:65534:\n";
  return s;
}

void add_file(std::vector<MountOp>& ops, const std::string& dest, std::string content, const char* why) {
  MountOp op = make_op(OpKind::kFile, dest, why);
  op.content = std::move(content);
  op.readonly = true;
  op.mode = 0644;
  ops.push_back(std::move(op));
}

// Whether every directory between /etc and a path below it is a plain
// directory, not a symlink (lstat). Remembers each answer: the curated
// entries share their subdirectories (ssl/certs, ssl/openssl.cnf).
class PlainDirs {
 public:
  bool holds(const HostFs& fs, const std::string& path) {
    for (size_t slash = path.find('/', 5); slash != std::string::npos; slash = path.find('/', slash + 1))
      if (!plain(fs, path.substr(0, slash))) return false;
    return true;
  }

 private:
  bool plain(const HostFs& fs, const std::string& dir) {
    for (const auto& [d, yes] : seen_)
      if (d == dir) return yes;
    const bool yes = fs.lstat_type(dir) == FileType::kDir;
    seen_.emplace_back(dir, yes);
    return yes;
  }
  std::vector<std::pair<std::string, bool>> seen_;
};

void add_etc(std::vector<MountOp>& ops, const Options& opts, const HostInfo& host, const Identity& id) {
  const HostFs& fs = *host.fs;
  ops.push_back(make_op(OpKind::kDir, "/etc", "etc"));
  // The curated list, plus resolv.conf when the network is shared (no copy
  // of the list: this runs at every start).
  const std::vector<std::string>& curated = curated_etc_entries();
  const std::string resolv = "resolv.conf";
  const size_t count = curated.size() + (opts.net == NetMode::kShare ? 1 : 0);
  // realpath(3) costs a readlink per component: only pay it for entries that
  // are symlinks or lie below one (a subdirectory of /etc that is a link),
  // or when /etc itself is not a plain directory. With no link on the way
  // the real path is the path, and its type the lstat's.
  std::string real;
  const bool etc_plain = fs.lstat_type("/etc") == FileType::kDir;
  PlainDirs plain_dirs;
  for (size_t i = 0; i < count; ++i) {
    const std::string& name = i < curated.size() ? curated[i] : resolv;
    std::string path = "/etc/" + name;
    auto type = fs.lstat_type(path);
    if (!type) continue;
    const bool is_link = *type == FileType::kSymlink;
    if (is_link) {
      auto target = fs.read_link(path);
      // Links into /usr (e.g. localtime -> /usr/share/zoneinfo/...) stay
      // links; anything else is bound from its real path.
      if (target && !target->empty() && path_is_within(*target, "/usr")) {
        MountOp op = make_op(OpKind::kSymlink, path, "etc");
        op.src = *target;
        ops.push_back(std::move(op));
        continue;
      }
    }
    MountOp op = make_op(OpKind::kBind, path, "etc");
    op.src = path;
    if (is_link || !etc_plain || !plain_dirs.holds(fs, path)) {
      if (fs.real_path(path, real) != 0 || !(type = fs.stat_type(real))) continue;
      op.src = real;
    }
    op.readonly = true;
    op.src_is_dir = *type == FileType::kDir;
    ops.push_back(std::move(op));
  }
  add_file(ops, "/etc/passwd", passwd_content(host, id), "etc (synthesized)");
  add_file(ops, "/etc/group", group_content(host, id), "etc (synthesized)");
  add_file(ops, "/etc/hostname", opts.hostname + "\n", "etc (synthesized)");
  add_file(ops, "/etc/hosts", "127.0.0.1\tlocalhost " + opts.hostname + "\n::1\tlocalhost ip6-localhost ip6-loopback\n",
           "etc (synthesized)");
}

void add_runtime_dirs(std::vector<MountOp>& ops, const Identity& id) {
  ops.push_back(make_op(OpKind::kProc, "/proc", "proc"));
  ops.push_back(make_op(OpKind::kDev, "/dev", "dev"));
  MountOp tmp = make_op(OpKind::kTmpfs, "/tmp", "private /tmp");
  tmp.mode = 01777;
  ops.push_back(std::move(tmp));
  if (id.home != "/" && id.home != "/nonexistent") {
    MountOp home = make_op(OpKind::kTmpfs, id.home, "private HOME");
    home.mode = 0700;
    home.owned = true;
    ops.push_back(std::move(home));
  }
}

// What the sandbox will show at `dest`, judged from the ops so far: a
// synthesized file, or the host path under the deepest bind holding it.
// Empty when nothing from the host is there.
std::string host_path_in_view(const std::string& dest, const std::vector<MountOp>& ops, bool& is_file) {
  is_file = false;
  const MountOp* best = nullptr;
  for (const auto& op : ops) {
    if (op.dest == dest && (op.kind == OpKind::kFile || op.kind == OpKind::kEmpty)) {
      is_file = true;
      return {};
    }
    if (op.kind == OpKind::kBind && path_is_within(dest, op.dest) && (!best || op.dest.size() >= best->dest.size()))
      best = &op;
  }
  if (!best) return {};
  return best->src + dest.substr(best->dest == "/" ? 0 : best->dest.size());
}

// One user entry -> one or two binds (real path, and the typed path when it
// went through symlinks), or a kTmpfs/kEmpty for DEST=none.
// `view` holds every bind of the final plan (for DEST=none).
Status add_user_entry(std::vector<MountOp>& ops, const MountEntry& e, const HostInfo& host,
                      const std::vector<MountOp>& view) {
  const HostFs& fs = *host.fs;
  const std::string why = "--mnt " + e.text;
  auto dest_t = expand_tilde(e.dest, host.home, fs);
  if (!dest_t) return dest_t.error();
  std::string dest = absolute_path(*dest_t, host.cwd);
  if (dest == "/")
    return usage_error("mount '" + e.text + "': cannot replace the whole root", "mount subdirectories instead");
  if (e.none) {
    // File or directory as the sandbox shows it (through any bind, whatever
    // the order given); the host's own type when nothing is bound there.
    bool is_file = false;
    std::string seen = host_path_in_view(dest, view, is_file);
    if (seen.empty() && !is_file) seen = dest;
    if (!seen.empty()) {
      auto type = fs.stat_type(seen);
      is_file = type && *type != FileType::kDir;
    }
    MountOp op = make_op(is_file ? OpKind::kEmpty : OpKind::kTmpfs, dest, why);
    op.readonly = is_file;
    op.mode = 0755;
    ops.push_back(std::move(op));
    return ok();
  }
  auto src_t = expand_tilde(e.src.empty() ? e.dest : e.src, host.home, fs);
  if (!src_t) return src_t.error();
  std::string src_abs = absolute_path(*src_t, host.cwd);
  auto real = host_realpath(src_abs, e.text, fs);
  if (!real) return real.error();
  if (e.src.empty() && *real == "/")
    return usage_error("mount '" + e.text + "': it resolves to /, which would replace the whole root",
                       "mount subdirectories instead");
  int err = 0;
  auto type = fs.stat_type(*real, &err);
  if (!type) return Error{"mount '" + e.text + "'", err, *real, {}, kExitUsage};
  MountOp op = make_op(OpKind::kBind, dest, why);
  op.src = *real;
  op.readonly = e.readonly;
  op.src_is_dir = *type == FileType::kDir;
  if (e.src.empty() && dest != *real) {
    // Typed through symlinks (e.g. HOME /u/x really /m/home/x): show it at both.
    MountOp at_real = op;
    at_real.dest = *real;
    ops.push_back(std::move(at_real));
  }
  ops.push_back(std::move(op));
  return ok();
}

// Our own symlinks (e.g. /lib -> usr/lib), as (link, target) pairs.
using Links = std::vector<std::pair<std::string, std::string>>;

Links collect_links(const std::vector<MountOp>& ops) {
  Links links;
  for (const auto& op : ops)
    if (op.kind == OpKind::kSymlink) links.emplace_back(op.dest, op.src);
  return links;
}

// Follows our own symlinks so that ancestry checks compare like with like.
std::string canonical_dest(const std::string& dest, const Links& links, int depth = 0) {
  if (depth > 8) return dest;
  for (const auto& [link, target] : links) {
    if (dest == link || !path_is_within(dest, link)) continue;
    std::string base = target[0] == '/' ? target : absolute_path(target, link + "/..");
    return canonical_dest(normalize_path(base + dest.substr(link.size())), links, depth + 1);
  }
  return dest;
}

// Every op's destination with our own symlinks followed, in the order of
// the ops: computed once, by order_ops, for every pass after it (they
// compare every pair of ops and never change a destination or a link).
using CanonicalDests = std::vector<std::string>;

// A mount point that does not exist inside a host bind would have to be
// created on the host. Refuse instead of writing to the user's files.
// Also marks the mount points that lie inside a host bind: apply never
// creates those (nothing is ever made on the host, even if the path vanished
// since this check).
Status check_mount_points(std::vector<MountOp>& ops, const CanonicalDests& canon, const HostFs& fs) {
  for (size_t i = 0; i < ops.size(); ++i) {
    const std::string& dest = canon[i];
    const MountOp* parent = nullptr;
    std::string parent_dest;
    for (size_t j = 0; j < i; ++j) {
      const std::string& pd = canon[j];
      if (pd != dest && path_is_within(dest, pd) && ops[j].kind != OpKind::kSymlink) {
        parent = &ops[j];
        parent_dest = pd;
      }
    }
    if (!parent || parent->kind != OpKind::kBind) continue;
    std::string host_path = parent->src + (parent_dest == "/" ? dest : dest.substr(parent_dest.size()));
    if (!fs.lstat_type(host_path))
      return usage_error("mount point " + ops[i].dest + " (" + ops[i].why + ") does not exist inside " + parent->dest +
                             ", which is bound from the host",
                         "create " + host_path + " on the host, or mount it somewhere else");
    ops[i].point_on_host = true;
  }
  return ok();
}

// Parents before children; equal depth keeps the given order (later wins).
// Returns the canonical destinations in the new order.
CanonicalDests order_ops(std::vector<MountOp>& ops) {
  const Links links = collect_links(ops);
  struct Keyed {
    size_t depth;
    size_t index;
    std::string canon;
  };
  std::vector<Keyed> keyed;
  keyed.reserve(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    std::string canon = canonical_dest(ops[i].dest, links);
    keyed.push_back({path_depth(canon), i, std::move(canon)});
  }
  std::stable_sort(keyed.begin(), keyed.end(), [](const Keyed& a, const Keyed& b) { return a.depth < b.depth; });
  std::vector<MountOp> sorted;
  sorted.reserve(ops.size());
  CanonicalDests canon;
  canon.reserve(ops.size());
  for (auto& k : keyed) {
    sorted.push_back(std::move(ops[k.index]));
    canon.push_back(std::move(k.canon));
  }
  ops = std::move(sorted);
  return canon;
}

bool is_file_op(OpKind k) { return k == OpKind::kFile || k == OpKind::kEmpty; }

// Decides, on the final order, how each file op gets to its place. A file can
// be written straight into the tmpfs that will hold it when that tmpfs gives
// it the right access: the root tmpfs (remounted read-only once built) for a
// read-only file, any other tmpfs (they stay writable) for a writable one.
// That saves a mount point, a bind and its remount per file. Anywhere else
// (inside a host bind, /dev, over a bound file) it is staged and bound.
void place_files(std::vector<MountOp>& ops, const CanonicalDests& canon) {
  for (size_t i = 0; i < ops.size(); ++i) {
    MountOp& op = ops[i];
    if (!is_file_op(op.kind)) continue;
    // The mount that will hold it: the last earlier mount at or above dest
    // (dirs, symlinks and files written in place are not mounts).
    const MountOp* holder = nullptr;
    for (size_t j = 0; j < i; ++j) {
      const MountOp& m = ops[j];
      if (m.kind == OpKind::kDir || m.kind == OpKind::kSymlink || (is_file_op(m.kind) && m.in_place)) continue;
      if (path_is_within(canon[i], canon[j])) holder = &m;
    }
    const bool on_tmpfs = holder && holder->kind == OpKind::kTmpfs;
    const bool on_root = on_tmpfs && holder->dest == "/";
    op.in_place = on_tmpfs && (on_root ? op.readonly : !op.readonly);
  }
}

// Seals the curated /etc (see MountOp::readonly for kDir): one recursive
// mount_setattr once the root is built instead of one per bind below it.
// Only when nothing at or below /etc has to stay writable or is not a plain
// read-only bind or file: a user's rw mount there, a DEST=none tmpfs, or
// another op at /etc itself (it would cover the sealed mount) keep the
// per-bind way.
void seal_etc(std::vector<MountOp>& ops, const CanonicalDests& canon) {
  MountOp* etc = nullptr;
  for (auto& op : ops)
    if (op.kind == OpKind::kDir && op.dest == "/etc" && op.why == "etc") etc = &op;
  if (!etc) return;
  for (size_t i = 0; i < ops.size(); ++i) {
    const MountOp& op = ops[i];
    if (&op == etc || !(path_is_within(canon[i], "/etc") || path_is_within(op.dest, "/etc"))) continue;
    const bool fits = op.kind == OpKind::kSymlink || op.kind == OpKind::kDir ||
                      ((op.kind == OpKind::kBind || op.kind == OpKind::kFile || op.kind == OpKind::kEmpty) &&
                       op.readonly && canon[i] != "/etc" && op.dest != "/etc");
    if (!fits) return;
  }
  etc->readonly = true;
}

Identity make_identity(const Options& opts, const HostInfo& host) {
  Identity id;
  id.outer_uid = host.uid;
  id.outer_gid = host.gid;
  id.inner_uid = opts.as_root ? 0 : host.uid;
  id.inner_gid = opts.as_root ? 0 : host.gid;
  id.user = host.user;
  id.home = host.home;
  id.shell = host.shell;
  id.maps = choose_id_maps(id.outer_uid, id.outer_gid, id.inner_uid, id.inner_gid, host.ids);
  return id;
}

}  // namespace

Result<std::string> host_realpath(const std::string& path, const std::string& entry, const HostFs& fs) {
  std::string real;
  if (int e = fs.real_path(path, real); e != 0) {
    if (std::string word = unknown_mount_flag(entry); e == ENOENT && !word.empty())
      return Error{"mount '" + entry + "'", 0,
                   "'" + word + "' is not a flag (ro, rw, rbind), and there is no path " + path,
                   "write [ro|rw|rbind,...:]PATH, e.g. ro:/data", kExitUsage};
    return Error{"mount '" + entry + "'", e, path,
                 e == ENOENT ? "create it first or fix the path" : "check the permissions", kExitUsage};
  }
  return real;
}

const std::vector<std::string>& curated_etc_entries() {
  // What programs need to run; never shadow, gshadow, ssh, sudoers, machine-id,
  // nor /etc/ssl/private (TLS keys: only certs and openssl.cnf). Each entry
  // present costs a bind at every start, so nothing that only editors, VCS,
  // logins or admin tools read (vim, gitconfig, subversion, mailcap, magic,
  // login.defs, environment, default/locale, locale.conf, the
  // update-ca-certificates config): mount those with --mnt when wanted. R and
  // papersize stay: Debian's R reads its Renviron (R_HOME/etc) from /etc/R.
  static const std::vector<std::string> kEntries = {
      "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives",   "ssl/certs",   "ssl/openssl.cnf", "locale.alias",
      "localtime",   "timezone",   "fonts",        "nsswitch.conf",  "host.conf",   "gai.conf",        "protocols",
      "services",    "mime.types", "os-release",   "debian_version", "bash.bashrc", "profile",         "inputrc",
      "terminfo",    "python3",    "python3.11",   "matplotlibrc",   "jupyter",     "ipython",         "R",
      "papersize",   "xdg",        "shells"};
  return kEntries;
}

std::vector<std::string> build_environment(const Options& opts, const HostInfo& host, const Identity& id) {
  std::map<std::string, std::string> env;
  for (const auto& [k, v] : host.env) {
    bool allowed = k == "PATH" || k == "LANG" || k == "TERM" || k == "TZ" || k == "LANGUAGE" ||
                   k.rfind("LC_", 0) == 0 ||
                   std::find(opts.keep_env.begin(), opts.keep_env.end(), k) != opts.keep_env.end();
    if (allowed) env[k] = v;
  }
  if (!env.count("PATH")) env["PATH"] = "/usr/local/bin:/usr/bin:/bin";
  env["HOME"] = id.home;
  env["USER"] = env["LOGNAME"] = id.inner_uid == 0 ? "root" : id.user;
  env["SHELL"] = id.shell;
  for (const auto& [k, v] : opts.setenv) env[k] = v;
  // jupyter_client sets JPY_PARENT_PID, and ipykernel then exits as soon as
  // getppid() is 1, which is what it sees under our init. ipykernel treats
  // the value 1 as "parent is init: do not poll" (and, unlike an unset
  // value, does not print its standalone-console banner). Parent death is
  // handled by the sandbox itself.
  if (host.env.count("JPY_PARENT_PID")) env["JPY_PARENT_PID"] = "1";
  else env.erase("JPY_PARENT_PID");
  std::vector<std::string> out;
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

Result<Plan> build_plan(const Options& opts, const HostInfo& host, const std::vector<MountOp>& extra) {
  Plan plan;
  plan.id = make_identity(opts, host);
  plan.new_net = opts.net == NetMode::kNone;
  plan.hostname = opts.hostname;
  plan.build_dir = opts.build_dir;
  plan.tmpfs_size = opts.tmpfs_size;
  plan.limits = opts.limits;
  if (!host.fs) return Error{"plan the sandbox", 0, "no host file system to plan with (HostInfo::fs)", {}, kExitSetup};
  const HostFs& fs = *host.fs;
  auto limits = plan_limits(opts.limits, opts.limits_via, host.cgroup);
  if (!limits) return limits.error();
  plan.rlimits = limits->rlimits;
  plan.cgroup = limits->cgroup;
  plan.limit_uses = limits->uses;
  if (plan.cgroup.use && !plan.cgroup.required) {
    // --limits=auto never fails a run that rlimits can do: what apply uses
    // when it cannot create the cgroup, decided now (and printed).
    auto rl = plan_limits(opts.limits, LimitsVia::kRlimit, CgroupHost{});
    if (!rl) return rl.error();
    plan.rlimit_fallback = RlimitFallback{rl->rlimits, rl->uses, rl->cgroup.why};
  }
  plan.seccomp = opts.seccomp != "off";
  plan.allow_userns = opts.allow_userns;
  plan.verbose = opts.verbose;

  if (auto type = fs.stat_type(opts.build_dir); !type || *type != FileType::kDir)
    return usage_error("-b " + opts.build_dir + ": not an existing directory",
                       "give an existing directory; it is only mounted over inside the sandbox");

  std::vector<MountOp>& ops = plan.ops;
  MountOp root = make_op(OpKind::kTmpfs, "/", "new root");
  ops.push_back(std::move(root));
  add_system_dirs(ops, fs);
  add_etc(ops, opts, host, plan.id);
  add_runtime_dirs(ops, plan.id);
  // First every bind (so DEST=none can see what will be there), then the
  // entries in the order given. Only DEST=none looks at `view`: without one
  // (the usual case) the copy is not made.
  std::vector<MountOp> view;
  if (std::any_of(opts.mounts.begin(), opts.mounts.end(), [](const MountEntry& e) { return e.none; })) {
    view = ops;
    for (const auto& e : opts.mounts)
      if (!e.none) IK_TRY(add_user_entry(view, e, host, view));
  }
  for (const auto& e : opts.mounts) IK_TRY(add_user_entry(ops, e, host, view));
  for (const auto& op : extra) ops.push_back(op);
  const CanonicalDests canon = order_ops(ops);
  IK_TRY(check_mount_points(ops, canon, fs));
  place_files(ops, canon);
  seal_etc(ops, canon);

  if (!opts.chdir.empty()) {
    auto t = expand_tilde(opts.chdir, host.home, fs);
    if (!t) return t.error();
    plan.cwd = absolute_path(*t, host.cwd);
    plan.cwd_explicit = true;
  } else {
    plan.cwd = host.cwd;
  }
  plan.argv = opts.argv;
  if (plan.argv.empty()) {
    auto it = host.env.find("SHELL");
    plan.argv.push_back(it != host.env.end() && !it->second.empty() ? it->second : "/bin/sh");
  }
  plan.env = build_environment(opts, host, plan.id);
  return plan;
}

}  // namespace ik
