// isolated-kernel: install, list, show, remove and diagnose isolated
// Jupyter kernelspecs.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "batch/run_cli.hpp"
#include "common/log.hpp"
#include "common/print_error.hpp"
#include "pool/daemon.hpp"
#include "parse/units.hpp"
#include "kernelspec/doctor.hpp"
#include "kernelspec/install.hpp"
#include "kernelspec/jupyter.hpp"
#include "kernelspec/plan_preview.hpp"
#include "kernelspec/spec_read.hpp"
#include "parse/cli.hpp"
#include "parse/json_text.hpp"
#include "parse/config.hpp"
#include "host/read_host.hpp"
#include "plan/planner.hpp"
#include "slurm/doctor_slurm.hpp"

extern char** environ;

namespace {
using nlohmann::json;

constexpr const char* kCommands[] = {"install", "list", "show", "remove", "doctor", "run", "pool"};

ik::Result<ik::KernelspecInfo> find_isolated(const std::string& name) {
  auto specs = ik::find_kernelspecs();
  if (!specs) return specs.error();
  auto it = specs->find(name);
  if (it == specs->end()) return ik::usage_error("no kernelspec named '" + name + "'", "see 'isolated-kernel list'");
  if (!it->second.error.empty())
    return ik::usage_error("kernelspec '" + name + "': " + it->second.error,
                           "fix it, or delete " + it->second.resource_dir);
  if (!ik::is_isolated(it->second))
    return ik::usage_error("kernelspec '" + name + "' is not an isolated kernelspec",
                           "manage it with 'jupyter kernelspec'");
  return it->second;
}

// Exit status 1 when a kernelspec could not be read (each gets a FAIL line).
int cmd_list() {
  auto specs = ik::find_kernelspecs();
  if (!specs) return ik::print_error(specs.error());
  int n = 0, broken = 0;
  for (const auto& [name, k] : *specs) {
    if (!k.error.empty()) {
      ++broken;
      std::printf("%-24s FAIL: %s\n  %s\n", name.c_str(), k.error.c_str(), k.resource_dir.c_str());
      continue;
    }
    if (!ik::is_isolated(k)) continue;
    ++n;
    auto settings = ik::kernelspec_settings(k.spec, k.resource_dir);
    if (!settings) {
      ++broken;
      std::printf("%-24s FAIL: %s\n  %s\n", name.c_str(), settings.error().describe().c_str(), k.resource_dir.c_str());
      continue;
    }
    std::printf("%-24s %s\n  %s\n  %s\n", name.c_str(), ik::spec_string(k.spec, "display_name", "").c_str(),
                ik::settings_summary(settings->opts).c_str(), k.resource_dir.c_str());
  }
  if (n == 0) std::printf("No isolated kernelspecs. Install one with: isolated-kernel install\n");
  return broken ? 1 : 0;
}

int cmd_show(const std::string& name) {
  auto k = find_isolated(name);
  if (!k) return ik::print_error(k.error());
  auto host = ik::read_host_info(environ);
  if (!host) return ik::print_error(host.error());
  auto dirs = ik::jupyter_dirs();
  if (!dirs) return ik::print_error(dirs.error());
  auto plan = ik::preview_plan(k->spec, k->resource_dir, *host, dirs->runtime);
  if (!plan) {
    ik::Error e = plan.error();
    e.step = k->resource_dir + "/" + e.step;
    return ik::print_error(e);
  }
  json out{{"name", name},
           {"resource_dir", k->resource_dir},
           {"kernel.json", k->spec},
           {"plan (for a kernel started in the current directory)", ik::plan_to_json(*plan)}};
  std::cout << ik::display_json(out) << std::endl;
  return 0;
}

// `isolated-kernel frobnicate`: CLI11 would only say that a subcommand is required.
int unknown_command(const std::vector<std::string>& args) {
  std::string list;
  for (const char* c : kCommands) list += (list.empty() ? "" : ", ") + std::string(c);
  if (args.empty()) {
    std::fprintf(stderr, "isolated-kernel: a command is required (commands: %s; see isolated-kernel --help)\n",
                 list.c_str());
    return ik::kExitUsage;
  }
  if (args[0].empty() || args[0][0] == '-') return -1;
  for (const char* c : kCommands)
    if (args[0] == c) return -1;
  std::fprintf(stderr, "isolated-kernel: unknown command '%s' (commands: %s; see isolated-kernel --help)\n",
               args[0].c_str(), list.c_str());
  return ik::kExitUsage;
}

int cmd_remove(const std::string& name) {
  auto k = find_isolated(name);
  if (!k) return ik::print_error(k.error());
  std::error_code ec;
  std::filesystem::remove_all(k->resource_dir, ec);
  if (ec)
    return ik::print_error(
        ik::Error{"remove " + k->resource_dir, ec.value(), {}, "check the permissions", ik::kExitSetup});
  std::printf("Removed %s\n", k->resource_dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ik::log::set_program("isolated-kernel");
  CLI::App app("Install and manage isolated Jupyter kernelspecs: kernels that run in a rootless sandbox with\n"
               "no network, no view of HOME or other processes, and only the directories you choose.",
               "isolated-kernel");
  app.set_version_flag("--version", IK_VERSION);
  app.require_subcommand(1);

  ik::InstallRequest req;
  auto* install = app.add_subcommand("install", "Install an isolated kernelspec (default: python3-isolated)");
  bool user = false, sys_prefix = false, no_check = false;
  std::vector<std::string> env_kv;
  install->add_flag("--user", user, "Install for the current user (JUPYTER_DATA_DIR or ~/.local/share/jupyter)");
  install->add_flag("--sys-prefix", sys_prefix, "Install into the Jupyter Python's sys.prefix");
  install->add_option("--prefix", req.prefix, "Install into PREFIX/share/jupyter/kernels")->type_name("PREFIX");
  install->add_option("--name", req.name, "Kernelspec name (default python3-isolated)");
  install->add_option(
      "--display-name", req.display_name,
      "Name shown in menus (default: '<wrapped> (isolated)', or '<wrapped> (isolated: NAME)' with --name)");
  install->add_flag("--replace", req.replace, "Overwrite an existing kernelspec of that name");
  install->add_option("--from", req.from, "Wrap this installed kernelspec (default python3)")->type_name("NAME");
  install->add_option("--python", req.python, "Build the kernel from this Python interpreter instead")
      ->type_name("PATH");
  install->add_option("--env", env_kv, "Environment variable for the kernel (repeatable)")->type_name("K=V");
  install->add_flag("--no-check", no_check, "Do not start the kernel once to prove it works");
  std::string pool_size;
  install
      ->add_option("--pool", pool_size,
                   "Keep N sandboxes of this kernelspec ready in the per-user pool daemon (0 = off; see 'pool')")
      ->type_name("N");
  std::vector<std::string> pool_preload;
  install
      ->add_option(
          "--pool-preload", pool_preload,
          "Modules a waiting pooled kernel imports beforehand, besides ipykernel (repeatable or comma-separated, "
          "e.g. numpy,pandas; with --pool)")
      ->type_name("MODULE")
      ->delimiter(',');
  ik::SandboxCli sandbox_cli(*install);

  auto* list = app.add_subcommand("list", "List isolated kernelspecs with their location and settings");
  std::string name;
  auto* show = app.add_subcommand("show", "Show a kernelspec and its resolved sandbox plan");
  show->add_option("NAME", name, "Kernelspec name")->required();
  auto* remove = app.add_subcommand("remove", "Remove an isolated kernelspec");
  remove->add_option("NAME", name, "Kernelspec name")->required();
  auto* doctor = app.add_subcommand("doctor", "Check this host and start each isolated kernelspec once");
  bool skip_kernels = false;
  doctor->add_flag("--no-kernels", skip_kernels, "Only check the host, start no kernels");
  bool doctor_slurm = false;
  std::vector<std::string> doctor_slurm_opts;
  doctor->add_flag("--slurm", doctor_slurm, "Run the checks on a Slurm compute node (through srun) instead of here");
  doctor
      ->add_option("--slurm-opt", doctor_slurm_opts,
                   "Option for srun with --slurm, e.g. --slurm-opt=--partition=gpu (repeatable)")
      ->type_name("OPT")
      ->allow_extra_args(false);
  ik::batch::RunCommand run(app);

  ik::pool::DaemonOptions pool_opts;
  bool pool_json = false;
  std::string idle = "30m";
  std::string max_memory = "1G";
  bool no_scan = false;
  auto* pool = app.add_subcommand("pool", "Run the per-user warm pool daemon of pooled kernelspecs (install --pool N)");
  pool->require_subcommand(1);
  auto* pool_start =
      pool->add_subcommand("start", "Start the daemon (also started on demand by a pooled kernel launch)");
  pool_start->add_option("--idle", idle, "Stop after this long without a kernel start (default 30m; 0 = never)")
      ->type_name("TIME");
  pool_start
      ->add_option("--max-sandboxes", pool_opts.max_sandboxes,
                   "Waiting sandboxes kept at most, all kernelspecs (default 16)")
      ->type_name("N");
  pool_start
      ->add_option("--max-memory", max_memory,
                   "Memory (PSS) of all waiting sandboxes kept at most; 0 = no cap (default 1G)")
      ->type_name("SIZE");
  pool_start->add_flag("--no-scan", no_scan,
                       "Do not fill the installed pooled kernelspecs now (pools then start at their first launch)");
  pool_start->add_flag("--foreground", pool_opts.foreground,
                       "Do not detach; log to stderr (for the systemd user unit isolated-kernel-pool.service)");
  pool_start->add_flag("--quiet", pool_opts.quiet, "Print nothing when started or already running");
  auto* pool_stop = pool->add_subcommand("stop", "Stop the daemon and its waiting sandboxes (running kernels go on)");
  auto* pool_status =
      pool->add_subcommand("status", "Show each pooled kernelspec: ready, starting, claimed, ages, memory");
  pool_status->add_flag("--json", pool_json, "As JSON");

  // Set after the subcommands, so their --help does not repeat it.
  app.footer(
      "Examples:\n  isolated-kernel install                      # python3-isolated, wrapping python3\n"
      "  isolated-kernel install --user --from ir --mnt ro:/srv/data\n"
      "  isolated-kernel doctor\n"
      "  isolated-kernel doctor --slurm --slurm-opt=--partition=NAME   # on a compute node\n"
      "  isolated-kernel run -j 4 --timeout 60s --report grades.csv submissions/\nDocs: man isolated-kernel; " IK_DOCDIR
      "/nbgrader.md, " IK_DOCDIR "/config.md"
      "\nEnvironment: IK_JUPYTER_PYTHON (the Python with jupyter_client, default /usr/bin/python3),\n"
      "IK_DATA_DIR (where kernelspecs/python3-isolated is). Exit status: 0 ok, 1 doctor found a failure,\n"
      "2 bad usage or settings, 125 could not install; list: 1 when a kernelspec could not be read.");
  if (int rc = unknown_command(ik::arguments(argc, argv)); rc >= 0) return rc;
  if (int rc = ik::parse_options(app, ik::arguments(argc, argv), "isolated-kernel"); rc >= 0) return rc;

  if (*install) {
    if ((user ? 1 : 0) + (sys_prefix ? 1 : 0) + (req.prefix.empty() ? 0 : 1) > 1)
      return ik::print_error(ik::usage_error("--user, --sys-prefix and --prefix exclude each other"));
    req.where = user                  ? ik::InstallWhere::kUser
                : sys_prefix          ? ik::InstallWhere::kSysPrefix
                : !req.prefix.empty() ? ik::InstallWhere::kPrefix
                                      : ik::InstallWhere::kDefault;
    req.check = !no_check;
    // Mounts given at install time are stored as typed; no MNTDIRS default.
    if (auto s = sandbox_cli.finish(req.sandbox, ""); !s) return ik::print_error(s.error());
    for (const auto& kv : env_kv) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) return ik::print_error(ik::usage_error("--env " + kv + ": expected K=V"));
      req.sandbox.setenv.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    }
    if (!pool_size.empty()) {
      auto n = ik::parse_count(pool_size, "--pool");
      if (!n) return ik::print_error(n.error());
      if (*n > 64) return ik::print_error(ik::usage_error("--pool " + pool_size + ": at most 64 waiting sandboxes"));
      req.sandbox.pool = static_cast<int>(*n);
    }
    for (const auto& m : pool_preload)
      if (!ik::is_module_name(m))
        return ik::print_error(ik::usage_error("--pool-preload " + m + ": not a Python module name",
                                               "e.g. --pool-preload numpy,pandas"));
    if (!pool_preload.empty() && req.sandbox.pool <= 0)
      return ik::print_error(
          ik::usage_error("--pool-preload needs --pool N (the modules are imported by waiting kernels)",
                          "add --pool 1, or leave --pool-preload out"));
    req.sandbox.pool_preload = pool_preload;
    ik::log::set_verbose(req.sandbox.verbose);
    auto dir = ik::install_kernelspec(req);
    if (!dir) return ik::print_error(dir.error());
    if (dir->empty()) return 0;  // --print-plan
    std::printf("Installed kernelspec %s in %s\n", req.name.c_str(), dir->c_str());
    return 0;
  }
  if (*list) return cmd_list();
  if (*show) return cmd_show(name);
  if (*remove) return cmd_remove(name);
  if (*doctor) {
    if (!doctor_slurm_opts.empty() && !doctor_slurm)
      return ik::print_error(ik::usage_error("--slurm-opt needs --slurm"));
    return doctor_slurm ? ik::run_doctor_slurm(doctor_slurm_opts, !skip_kernels) : ik::run_doctor(!skip_kernels);
  }
  if (*run.app()) return run.run();
  if (*pool_start) {
    auto secs = ik::parse_seconds(idle, "--idle");
    if (!secs) return ik::print_error(secs.error());
    pool_opts.idle_seconds = static_cast<long>(*secs);
    auto mem = ik::parse_size(max_memory, "--max-memory");  // 0: no cap
    if (!mem) return ik::print_error(mem.error());
    pool_opts.max_memory = *mem;
    pool_opts.scan = !no_scan;
    return ik::pool::pool_start(pool_opts);
  }
  if (*pool_stop) return ik::pool::pool_stop();
  if (*pool_status) return ik::pool::pool_status(pool_json);
  return 0;
}
