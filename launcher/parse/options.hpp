// Options: what the user asked for, from the command line, MNTDIRS and
// --config JSON. Pure data; nothing here touches the system.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace ik {

// One entry of a mount list, as typed: [FLAGS:]PATH, [FLAGS:]DEST=SRC, DEST=none.
struct MountEntry {
  std::string text;  // the entry as typed, for messages
  bool readonly = false;
  bool rbind = false;  // accepted for isolate.sh compatibility; binds are always recursive
  std::string dest;    // as typed (may be relative or start with ~)
  std::string src;     // as typed; empty means same as dest
  bool none = false;   // DEST=none: hide DEST behind an empty dir/file
};

enum class NetMode { kNone, kShare };

// isolate --pty / --no-pty: whether PROG gets a new pseudo-terminal of the
// sandbox's own devpts (plan/terminal.hpp decides kAuto).
enum class PtyMode { kAuto, kAlways, kNever };

// --limits: how --memory and --nproc are enforced. kAuto: a cgroup v2 child
// (memory.max, pids.max) when the caller's cgroup is delegated and has the
// controller, else rlimits; kCgroup: a cgroup or fail; kRlimit: rlimits only.
enum class LimitsVia { kAuto, kCgroup, kRlimit };
const char* limits_via_name(LimitsVia v);                            // "auto", "cgroup", "rlimit"
std::optional<LimitsVia> parse_limits_via(const std::string& text);  // (parse/config.cpp)

// Resource limits. Unset means "no limit beyond the host's".
struct Limits {
  std::optional<std::uint64_t> memory_bytes;  // --memory
  std::optional<std::uint64_t> cpu_seconds;   // --cpu-time
  std::optional<std::uint64_t> wall_seconds;  // --wall-time
  std::optional<std::uint64_t> nproc;         // --nproc
  std::optional<std::uint64_t> nofile;        // --nofile
  std::optional<std::uint64_t> fsize_bytes;   // --fsize
};

struct Options {
  std::vector<MountEntry> mounts;  // in the order given
  bool mounts_given = false;       // -m/--mnt/config seen (else MNTDIRS, else ".")
  int verbose = 0;
  std::string build_dir = "/tmp";  // -b: where the new root is assembled (inside our mount ns)
  NetMode net = NetMode::kNone;
  bool as_root = false;                   // --root: appear as uid 0
  std::uint64_t tmpfs_size = 1ull << 30;  // cap for every tmpfs we create
  std::string hostname = "isolated";
  std::vector<std::pair<std::string, std::string>> setenv;
  std::vector<std::string> keep_env;
  std::string seccomp = "default";  // "default" or "off"
  bool allow_userns = false;
  Limits limits;
  LimitsVia limits_via = LimitsVia::kAuto;  // --limits, config limits.mechanism
  std::string chdir;                        // --chdir, empty = the logical cwd
  bool print_plan = false;
  PtyMode pty = PtyMode::kAuto;           // isolate only: --pty / --no-pty
  int pool = 0;                           // kernelspec metadata "pool": waiting sandboxes to keep (docs/pool.md)
  std::vector<std::string> pool_preload;  // metadata "pool_preload": modules a waiting kernel imports beforehand
  std::vector<std::string> argv;          // the program and its arguments
};

}  // namespace ik
