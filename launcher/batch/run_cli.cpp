#include "batch/run_cli.hpp"
#include "slurm/run_slurm.hpp"

#include <unistd.h>

#include "batch/run_exec.hpp"
#include "common/print_error.hpp"
#include "kernelspec/jupyter.hpp"
#include "kernelspec/spec_read.hpp"
#include "kernelspec/subprocess.hpp"
#include "parse/units.hpp"
#include "common/paths.hpp"

namespace ik::batch {

RunCommand::RunCommand(CLI::App& parent) {
  app_ = parent.add_subcommand("run", "Execute notebooks, each in a fresh isolated kernel, N at a time, with a report");
  app_->add_option("NOTEBOOK_OR_DIR", o_.inputs, "Notebooks (.ipynb) and directories searched for them");
  app_->add_option("--kernel", o_.kernel, "Isolated kernelspec to run them with (default python3-isolated)")
      ->type_name("NAME");
  app_->add_option("-j,--jobs", o_.jobs,
                   "Notebooks at a time (default: the number of CPUs); with a pooled kernelspec also the size of "
                   "the run's own warm pool, which ends with the run")
      ->type_name("N");
  app_->add_option("--timeout", timeout_, "Per-cell time limit, e.g. 60s or 5m (default: none)")->type_name("TIME");
  app_->add_option("--notebook-timeout", notebook_timeout_,
                   "Time limit of a whole notebook, its kernel's start included (default: none)")
      ->type_name("TIME");
  app_->add_option("--startup-timeout", startup_timeout_, "Time a kernel may take to start (default 60s)")
      ->type_name("TIME");
  app_->add_flag("--allow-errors", o_.allow_errors,
                 "Go on after a cell raises (as nbconvert --allow-errors); the notebook counts as ok, the "
                 "table says where it first raised");
  app_->add_option("-o,--output-dir", o_.output_dir,
                   "Where executed notebooks (mirroring the input tree) and report.jsonl go (default ./run-output)")
      ->type_name("DIR");
  app_->add_flag("--inplace", o_.inplace, "Overwrite the input notebooks with their executed version");
  app_->add_option("--report", o_.report, "Also write the report here: JSON lines, or CSV when FILE ends in .csv")
      ->type_name("FILE");
  app_->add_flag("--resume", o_.resume,
                 "Skip notebooks whose record in the output directory's report is ok for the same content");
  app_->add_flag("-n,--dry-run", o_.dry_run,
                 "Print the plan (notebooks, outputs, slots, options) as JSON; run nothing");
  app_->add_option("--share", share_,
                   "SHARE is I/K: run only share I of K of the notebooks (every K-th from the I-th; what a job "
                   "array task runs)")
      ->type_name("SHARE");
  const char* l = "Limits of each kernel for this run (override the kernelspec's)";
  app_->add_option("--memory", memory_, "Memory cap, e.g. 1G")->type_name("SIZE")->group(l);
  app_->add_option("--nproc", nproc_, "Maximum number of processes and threads")->type_name("N")->group(l);
  app_->add_option("--wall-time", wall_time_, "Wall-clock limit of each kernel")->type_name("TIME")->group(l);
  app_->add_option("--cpu-time", cpu_time_, "CPU time limit per process")->type_name("TIME")->group(l);
  app_->add_option("--nofile", nofile_, "Maximum number of open files")->type_name("N")->group(l);
  app_->add_option("--fsize", fsize_, "Maximum size of a written file")->type_name("SIZE")->group(l);
  app_->add_option("--limits", limits_, "auto, cgroup or rlimit (see isolated-kernel-launcher --help)")
      ->type_name("MODE")
      ->group(l);
  app_->add_option("--kernel-option", kernel_option_,
                   "Any other launcher option for this run, one word each (repeatable), e.g. "
                   "--kernel-option=--mnt=ro:/srv/data")
      ->type_name("OPT")
      ->group(l);
  ik::slurm::add_slurm_options(*app_, slurm_);
  app_->footer("Examples:\n"
               "  isolated-kernel run submissions/                  # every notebook below, -j CPUs\n"
               "  isolated-kernel run -j 4 --timeout 60s --memory 1G --report grades.csv submitted/*/ps1\n"
               "  isolated-kernel run --resume submissions/         # again: only what did not pass\n"
               "  isolated-kernel run --dry-run lectures/           # the plan as JSON\n"
               "Exit status: 0 every notebook ok, 1 some failed (see the table), 2 bad usage, 125 could not run,\n"
               "128+N stopped by signal N (the partial report is written). Docs: man isolated-kernel; " IK_DOCDIR
               "/grading-at-scale.md");
}

Status RunCommand::finish() {
  auto secs = [](const std::string& text, const char* what, std::optional<std::uint64_t>& out) -> Status {
    if (text.empty()) return ok();
    auto v = parse_seconds(text, what);
    if (!v) return v.error();
    if (*v == 0) return usage_error(std::string(what) + " must be at least 1s", "leave it out for no limit");
    out = *v;
    return ok();
  };
  IK_TRY(secs(timeout_, "--timeout", o_.timeout));
  IK_TRY(secs(notebook_timeout_, "--notebook-timeout", o_.notebook_timeout));
  std::optional<std::uint64_t> startup;
  IK_TRY(secs(startup_timeout_, "--startup-timeout", startup));
  if (startup) o_.startup_timeout = *startup;
  if (o_.inplace && app_->count("--output-dir") == 0) {
    // the report still goes to ./run-output
  }
  if (!share_.empty()) {
    auto s = parse_share(share_);
    if (!s) return s.error();
    o_.share_index = s->first;
    o_.share_count = s->second;
  }
  // Limits are checked here with the launcher's own parsers, then passed on as its argv words.
  struct Lim {
    const char* flag;
    const std::string& text;
    Result<std::uint64_t> (*parse)(const std::string&, const std::string&);
  };
  for (const Lim& l : {Lim{"--memory", memory_, parse_size}, Lim{"--nproc", nproc_, parse_count},
                       Lim{"--wall-time", wall_time_, parse_seconds}, Lim{"--cpu-time", cpu_time_, parse_seconds},
                       Lim{"--nofile", nofile_, parse_count}, Lim{"--fsize", fsize_, parse_size}}) {
    if (l.text.empty()) continue;
    if (auto v = l.parse(l.text, l.flag); !v) return v.error();
    o_.kernel_options.insert(o_.kernel_options.end(), {l.flag, l.text});
    o_.overrides.push_back(l.flag);
  }
  if (!limits_.empty()) {
    if (limits_ != "auto" && limits_ != "cgroup" && limits_ != "rlimit")
      return usage_error("--limits " + limits_ + ": expected auto, cgroup or rlimit");
    o_.kernel_options.insert(o_.kernel_options.end(), {"--limits", limits_});
    o_.overrides.push_back("--limits");
  }
  for (const auto& k : kernel_option_) {
    if (k.empty() || k[0] != '-')
      return usage_error("--kernel-option " + k + ": expected a launcher option such as --mnt=ro:/data",
                         "one word each: --kernel-option=--mnt=ro:/data");
    o_.kernel_options.push_back(k);
  }
  return ok();
}

int RunCommand::run() {
  if (auto s = finish(); !s) return print_error(s.error());
  if (auto s = ik::slurm::check_slurm_options(slurm_, o_); !s) return print_error(s.error());
  if (!slurm_.collect.empty()) return ik::slurm::collect_run(slurm_.collect);
  char cwd_buf[4096];
  if (!getcwd(cwd_buf, sizeof cwd_buf)) return print_error(sys_error("getcwd"));
  const std::string cwd = normalize_path(cwd_buf);
  auto found = discover(o_.inputs, cwd, o_.inplace ? std::string() : absolute_path(o_.output_dir, cwd));
  if (!found) return print_error(found.error());
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  auto plan = build_run_plan(o_, *found, cwd, cpus > 0 ? static_cast<unsigned>(cpus) : 1u);
  if (!plan) return print_error(plan.error());
  if (slurm_.slurm && o_.dry_run) return ik::slurm::submit_run(*plan, slurm_);
  if (o_.dry_run) {
    std::printf("%s\n", plan_to_json(*plan).dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  // The kernelspec must exist and be isolated; its own limits count for the verdicts.
  auto specs = find_kernelspecs();
  if (!specs) return print_error(specs.error());
  auto it = specs->find(o_.kernel);
  if (it == specs->end())
    return print_error(usage_error("no kernelspec named '" + o_.kernel + "'",
                                   "see 'isolated-kernel list', or install one with 'isolated-kernel install'"));
  if (!it->second.error.empty()) return print_error(usage_error("kernelspec '" + o_.kernel + "': " + it->second.error));
  if (!is_isolated(it->second))
    return print_error(usage_error("kernelspec '" + o_.kernel + "' is not an isolated kernelspec",
                                   "isolated-kernel install --from " + o_.kernel + ", then --kernel " + o_.kernel +
                                       "-isolated"));
  if (slurm_.slurm) return ik::slurm::submit_run(*plan, slurm_);
  ExecSetup setup;
  setup.python = jupyter_python();
  setup.worker = find_worker();
  if (setup.worker.empty())
    return print_error(sys_error("find ik_run_notebook.py", ENOENT, "reinstall isolated-kernel, or set IK_DATA_DIR"));
  setup.spec = it->second;
  setup.memory_limit = !memory_.empty();
  setup.nproc_limit = !nproc_.empty();
  if (auto settings = kernelspec_settings(it->second.spec, it->second.resource_dir)) {
    setup.memory_limit = setup.memory_limit || settings->opts.limits.memory_bytes.has_value();
    setup.nproc_limit = setup.nproc_limit || settings->opts.limits.nproc.has_value();
  }
  return execute_plan(*plan, setup);
}

}  // namespace ik::batch
