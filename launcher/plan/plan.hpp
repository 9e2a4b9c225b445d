// The plan: everything the sandbox will do, resolved and ordered, as plain
// data. Built on the host before clone(); printed by --print-plan; executed
// by apply/. Nothing in here touches the system.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "parse/options.hpp"
#include "plan/cgroup.hpp"
#include "plan/ids.hpp"
#include "plan/terminal.hpp"

namespace ik {

enum class OpKind {
  kTmpfs,    // empty tmpfs at dest (mode, owner = inner uid when `owned`)
  kBind,     // host path src (resolved, no symlinks) bound at dest
  kDir,      // directory on the tmpfs it lives in; `readonly`: sealed (see MountOp::readonly)
  kSymlink,  // symlink dest -> src
  kFile,     // synthesized file with `content` at dest (see MountOp::in_place)
  kEmpty,    // DEST=none over a file: an empty read-only file at dest (see MountOp::in_place)
  kProc,     // fresh procfs for the new pid namespace
  kDev,      // minimal /dev: null zero full random urandom tty, pts, shm, fd links
};

const char* op_kind_name(OpKind k);

struct MountOp {
  OpKind kind;
  std::string dest;     // absolute path inside the sandbox
  std::string src;      // kBind: host path; kSymlink: target
  std::string content;  // kFile
  // kBind/kFile/kEmpty: read-only inside. kDir: sealed, i.e. a mount of its
  // own (bound onto itself) that is made read-only, nosuid, nodev with
  // everything mounted below it by one recursive mount_setattr once the
  // root is built; the binds below it then skip their own. Only when
  // nothing below it has to stay writable (the planner checks).
  bool readonly = false;
  // kFile/kEmpty: written straight into the tmpfs holding dest, which gives
  // the right access by itself (the root tmpfs, remounted read-only once
  // built, for read-only files; a writable tmpfs for writable ones). When
  // false the file is staged and bound at dest (inside a host bind, say).
  bool in_place = false;
  bool src_is_dir = true;  // kBind: make a directory or a file as mount point
  bool owned = false;      // kTmpfs: owned by the sandbox user (HOME)
  // dest lies inside a host bind: its mount point exists on the host (the
  // planner checked) and apply must never create it there.
  bool point_on_host = false;
  unsigned mode = 0755;  // kTmpfs/kDir/kFile
  std::string why;       // where it came from: "system", "etc", "home", "--mnt ro:/x", ...
};

struct Identity {
  uid_t outer_uid = 0;
  gid_t outer_gid = 0;
  uid_t inner_uid = 0;
  gid_t inner_gid = 0;
  std::string user;   // login name
  std::string home;   // HOME inside (the caller's HOME path)
  std::string shell;  // login shell
  // The sandbox's uid_map and gid_map (plan/ids.hpp: one line inner ->
  // outer, or root's identity map of every id it has).
  IdMaps maps;
};

// --limits=auto with a cgroup: what enforces the limits instead when apply
// cannot create the cgroup (a warning, then rlimits; never a failed run).
// Decided by the planner so that apply never re-plans and --print-plan
// shows it.
struct RlimitFallback {
  Limits rlimits;              // every limit given, by setrlimit
  std::vector<LimitUse> uses;  // what enforces each limit then
  std::string why;             // the cgroup's "why" then
};

struct Plan {
  Identity id;
  std::vector<MountOp> ops;  // executed in this order
  bool new_net = true;
  std::string hostname;
  std::string build_dir;
  std::uint64_t tmpfs_size = 0;
  std::string cwd;                                // working directory inside
  bool cwd_explicit = false;                      // --chdir: a missing one is an error, not a fallback
  std::vector<std::string> argv;                  // program and arguments (argv[0] may need PATH lookup)
  std::vector<std::string> env;                   // complete environment, "K=V"
  Limits limits;                                  // as given (--print-plan shows them)
  Limits rlimits;                                 // the ones set with setrlimit: limits minus what the cgroup enforces
  CgroupPlan cgroup;                              // the sandbox's own cgroup v2, if used (apply/cgroup.cpp)
  std::vector<LimitUse> limit_uses;               // what enforces each limit (-v, --print-plan)
  std::optional<RlimitFallback> rlimit_fallback;  // set when cgroup.use && !cgroup.required
  bool seccomp = true;
  bool allow_userns = false;
  int verbose = 0;
  TerminalPlan terminal;  // isolate: a pty for the program, or its stdio inherited
};

nlohmann::json plan_to_json(const Plan& plan);

}  // namespace ik
