#include "parse/cli.hpp"

#include <algorithm>
#include <cstdio>

#include "parse/config.hpp"
#include "parse/mount_list.hpp"
#include "parse/units.hpp"

#ifndef IK_DOCDIR  // set by CMake; the fuzz targets build without it
#define IK_DOCDIR "/usr/share/doc/isolated-kernel"
#endif

namespace ik {

SandboxCli::SandboxCli(CLI::App& app) : app_(app) {
  const char* g = "Sandbox";
  app.add_option("-m,--mnt", mnt_lists_,
                 "Space-separated mount list: [ro|rw|rbind,...:]PATH, DEST=SRC or DEST=none. "
                 "Repeatable. Default: $MNTDIRS, else '.'")
      ->type_name("LIST")
      ->group(g);
  app.add_flag("-v,--verbose", verbose_, "Log every step on stderr (namespaces, mounts, limits, relay); once is enough")
      ->group(g);
  app.add_option("-b,--build-dir", build_dir_,
                 "Existing directory where the new root is assembled, inside the sandbox's own mount "
                 "namespace (default /tmp; nothing is created on the host)")
      ->type_name("DIR")
      ->group(g);
  app.add_flag("--no-net", no_net_,
               "Own network namespace with only lo up (the default). "
               "NOTE: in isolate.sh --no-net meant 'share the network'")
      ->group(g);
  app.add_flag("--share-net", share_net_, "Share the host's network (no network isolation)")->group(g);
  app.add_flag("--root", root_, "Appear as uid/gid 0 inside (still the caller's uid outside)")->group(g);
  app.add_option("--tmpfs-size", tmpfs_size_,
                 "Size cap of each tmpfs the sandbox creates (/, /tmp, HOME, /dev/shm, DEST=none dirs; /dev itself is "
                 "1M), e.g. 512M (default 1G, at least 1M)")
      ->type_name("SIZE")
      ->group(g);
  app.add_option("--hostname", hostname_, "Hostname inside (default 'isolated')")->group(g);
  app.add_option("--setenv", setenv_, "Set an environment variable inside (repeatable)")->type_name("K=V")->group(g);
  app.add_option("--keep-env", keep_env_, "Pass this variable of the caller through (repeatable)")
      ->type_name("NAME")
      ->group(g);
  app.add_option("--chdir", chdir_, "Working directory inside (default: the current directory)")
      ->type_name("DIR")
      ->group(g);
  app.add_option("--config", config_,
                 "JSON file with the same settings (see " IK_DOCDIR "/config.md); flags override it")
      ->type_name("FILE")
      ->group(g);
  app.add_option("--kernelspec", kernelspec_,
                 "Kernelspec directory whose kernel.json metadata.isolated_kernel holds the settings "
                 "(what `isolated-kernel install` writes; jupyter passes {resource_dir})")
      ->type_name("DIR")
      ->group(g);
  app.add_flag("--print-plan", print_plan_, "Print the resolved settings and mount plan as JSON and exit")->group(g);
  app.add_option("--seccomp", seccomp_, "Syscall filter: default or off (debugging only)")->type_name("MODE")->group(g);
  app.add_flag("--allow-userns", allow_userns_, "Allow creating nested user namespaces inside")->group(g);
  const char* l = "Limits";
  app.add_option("--memory", memory_,
                 "Memory cap, e.g. 2G (at least 4M): RAM of the whole sandbox (cgroup memory.max) when a "
                 "delegated cgroup v2 has the memory controller, else address space per process (RLIMIT_AS)")
      ->type_name("SIZE")
      ->group(l);
  app.add_option("--cpu-time", cpu_time_, "CPU time limit per process (RLIMIT_CPU), e.g. 60s or 10m (at least 1s)")
      ->type_name("TIME")
      ->group(l);
  app.add_option("--wall-time", wall_time_, "Wall-clock limit (at least 1s); the whole sandbox is killed after it")
      ->type_name("TIME")
      ->group(l);
  app.add_option("--nproc", nproc_,
                 "Maximum number of processes and threads: in the sandbox (cgroup pids.max) "
                 "when a delegated cgroup v2 has the pids controller, else of this uid (RLIMIT_NPROC)")
      ->type_name("N")
      ->group(l);
  app.add_option("--nofile", nofile_, "Maximum number of open files")->type_name("N")->group(l);
  app.add_option("--fsize", fsize_, "Maximum size of a written file, e.g. 1G")->type_name("SIZE")->group(l);
  app.add_option("--limits", limits_via_,
                 "How --memory and --nproc are enforced: auto (a cgroup v2 when usable, else rlimits; the "
                 "default), cgroup (fail if no delegated cgroup v2 can take them) or rlimit")
      ->type_name("MODE")
      ->group(l);
}

namespace {

Status set_limit(const std::string& text, const char* flag, std::optional<std::uint64_t>& slot,
                 Result<std::uint64_t> (*parse)(const std::string&, const std::string&)) {
  if (text.empty()) return ok();
  auto r = parse(text, flag);
  if (!r) return r.error();
  slot = *r;
  return ok();
}

Status add_mount_lists(const std::vector<std::string>& lists, const char* where, Options& out) {
  for (const auto& list : lists) {
    auto entries = parse_mount_list(list);
    if (!entries) {
      Error e = entries.error();
      e.step = std::string(where) + ": " + e.step;
      return e;
    }
    for (auto& e : *entries) out.mounts.push_back(std::move(e));
  }
  return ok();
}

}  // namespace

Status check_limit_floors(const Limits& limits) {
  // Below this not even the C library maps (RLIMIT_AS): the program would die
  // of SIGSEGV before printing anything.
  if (limits.memory_bytes && *limits.memory_bytes < kMinMemoryBytes)
    return usage_error("--memory must be at least 4M (less cannot even load the C library)",
                       "a Python kernel needs about 200M; e.g. --memory 1G");
  // A limit of 0 would kill the program at once.
  if (limits.wall_seconds && *limits.wall_seconds == 0)
    return usage_error("--wall-time must be at least 1s", "leave it out for no limit");
  if (limits.cpu_seconds && *limits.cpu_seconds == 0)
    return usage_error("--cpu-time must be at least 1s", "leave it out for no limit");
  return ok();
}

Status SandboxCli::finish(Options& out, const char* mntdirs) const {
  // Precedence: kernelspec metadata, then --config, then flags.
  if (!kernelspec_.empty()) IK_TRY(apply_kernelspec_config(kernelspec_, out));
  if (!config_.empty()) IK_TRY(apply_config_file(config_, out));
  if (!mnt_lists_.empty()) {
    IK_TRY(add_mount_lists(mnt_lists_, "--mnt", out));
    out.mounts_given = true;
  }
  if (!out.mounts_given) {
    IK_TRY(add_mount_lists({mntdirs ? std::string(mntdirs) : std::string(".")}, "MNTDIRS", out));
    out.mounts_given = true;
  }
  if (no_net_ && share_net_) return usage_error("--no-net and --share-net contradict each other", "pick one");
  if (share_net_) out.net = NetMode::kShare;
  if (no_net_) out.net = NetMode::kNone;
  if (root_) out.as_root = true;
  if (allow_userns_) out.allow_userns = true;
  if (print_plan_) out.print_plan = true;
  out.verbose += verbose_;
  if (!build_dir_.empty()) out.build_dir = build_dir_;
  if (!hostname_.empty()) out.hostname = hostname_;
  IK_TRY(validate_hostname(out.hostname, "--hostname"));
  if (!chdir_.empty()) out.chdir = chdir_;
  if (!seccomp_.empty()) {
    if (seccomp_ != "default" && seccomp_ != "off")
      return usage_error("--seccomp " + seccomp_ + ": unknown mode", "use --seccomp=default or --seccomp=off");
    out.seccomp = seccomp_;
  }
  if (!tmpfs_size_.empty()) {
    auto r = parse_size(tmpfs_size_, "--tmpfs-size");
    if (!r) return r.error();
    out.tmpfs_size = *r;
  }
  for (const auto& kv : setenv_) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) return usage_error("--setenv " + kv + ": expected NAME=VALUE");
    out.setenv.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
  }
  for (const auto& k : keep_env_) out.keep_env.push_back(k);
  IK_TRY(set_limit(memory_, "--memory", out.limits.memory_bytes, &parse_size));
  IK_TRY(set_limit(cpu_time_, "--cpu-time", out.limits.cpu_seconds, &parse_seconds));
  IK_TRY(set_limit(wall_time_, "--wall-time", out.limits.wall_seconds, &parse_seconds));
  IK_TRY(set_limit(nproc_, "--nproc", out.limits.nproc, &parse_count));
  IK_TRY(set_limit(nofile_, "--nofile", out.limits.nofile, &parse_count));
  IK_TRY(set_limit(fsize_, "--fsize", out.limits.fsize_bytes, &parse_size));
  if (!limits_via_.empty()) {
    auto via = parse_limits_via(limits_via_);
    if (!via) return usage_error("--limits " + limits_via_ + ": unknown mode", "use --limits=auto, cgroup or rlimit");
    out.limits_via = *via;
  }
  if (out.tmpfs_size < (1u << 20)) return usage_error("--tmpfs-size must be at least 1M");
  return check_limit_floors(out.limits);
}

std::vector<std::string> normalize_short_equals(const std::vector<std::string>& options) {
  std::vector<std::string> out;
  for (const auto& a : options) {
    if (a.size() > 3 && a[0] == '-' && a[1] != '-' && a[2] == '=' && (a[1] == 'm' || a[1] == 'b' || a[1] == 'f')) {
      out.push_back(a.substr(0, 2));
      out.push_back(a.substr(3));
      continue;
    }
    out.push_back(a);
  }
  return out;
}

std::vector<std::string> arguments(int argc, char** argv) { return std::vector<std::string>(argv + 1, argv + argc); }

SplitArgs split_command(const CLI::App& app, const std::vector<std::string>& args) {
  SplitArgs out;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;
    out.options.push_back(a);
    if (a.find('=') != std::string::npos) continue;
    std::string name = a.substr(0, a[1] == '-' ? std::string::npos : 2);
    const CLI::Option* opt = app.get_option_no_throw(name);
    // "-mLIST" carries its value; "-m LIST" takes the next word.
    bool attached = a[1] != '-' && a.size() > 2;
    if (opt && opt->get_expected_min() > 0 && !attached && i + 1 < args.size()) out.options.push_back(args[++i]);
  }
  for (; i < args.size(); ++i) out.command.push_back(args[i]);
  return out;
}

int parse_options(CLI::App& app, std::vector<std::string> options, const char* program) {
  options = normalize_short_equals(options);
  std::reverse(options.begin(), options.end());  // CLI11 takes them reversed
  try {
    app.parse(options);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "%s: %s (see %s --help)\n", program, e.what(), program);
    return kExitUsage;
  }
  return -1;
}

}  // namespace ik
