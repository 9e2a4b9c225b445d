#include "slurm/doctor_slurm.hpp"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <sstream>

#include "common/error.hpp"
#include "common/print_error.hpp"
#include "kernelspec/subprocess.hpp"
#include "slurm/slurm_cli.hpp"

namespace ik {
namespace {

// The value after "NAME=" in a comma-separated detail, "" when absent.
std::string value_of(const std::string& detail, const std::string& name) {
  auto at = detail.find(name + "=");
  if (at == std::string::npos) return "";
  auto start = at + name.size() + 1;
  auto end = detail.find_first_of(", ", start);
  return detail.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// "FAIL  user namespaces              detail" -> {"FAIL", "user namespaces", "detail"}
bool split_line(const std::string& line, std::string& tag, std::string& what, std::string& detail) {
  if (line.size() < 6 || (line.rfind("PASS", 0) != 0 && line.rfind("WARN", 0) != 0 && line.rfind("FAIL", 0) != 0))
    return false;
  tag = line.substr(0, 4);
  // doctor prints "%-4s  %-28s %s".
  std::string rest = line.substr(6);
  what = rest.substr(0, std::min<size_t>(28, rest.size()));
  while (!what.empty() && what.back() == ' ') what.pop_back();
  detail = rest.size() > 29 ? rest.substr(29) : "";
  return true;
}

}  // namespace

std::vector<std::string> doctor_srun_argv(const std::string& self, const std::vector<std::string>& slurm_opts,
                                          bool kernels) {
  // One task on one node; the user's options come last so they win.
  std::vector<std::string> argv{"srun", "--nodes=1", "--ntasks=1", "--job-name=isolated-kernel-doctor"};
  argv.insert(argv.end(), slurm_opts.begin(), slurm_opts.end());
  argv.insert(argv.end(), {"--", self, "doctor"});
  if (!kernels) argv.push_back("--no-kernels");
  return argv;
}

NodeVerdict read_node_verdict(const std::string& out) {
  NodeVerdict v;
  std::istringstream in(out);
  std::string line, tag, what, detail;
  while (std::getline(in, line)) {
    if (line == "All required checks passed." || line == "Some checks failed.") v.completed = true;
    if (!split_line(line, tag, what, detail)) continue;
    if (what == "Slurm node") v.node = detail.substr(0, detail.find(' '));
    if (what == "namespace sysctls" && tag == "FAIL") {
      v.userns_disabled = true;
      if (value_of(detail, "user.max_user_namespaces") == "0")
        v.sysctls_to_set.push_back("user.max_user_namespaces=15000");
      if (value_of(detail, "kernel.apparmor_restrict_unprivileged_userns") == "1")
        v.sysctls_to_set.push_back("kernel.apparmor_restrict_unprivileged_userns=0");
    }
    if (what == "user namespaces" && tag == "FAIL") v.userns_failure = detail;
  }
  return v;
}

std::string admin_advice(const NodeVerdict& v) {
  const std::string node = v.node.empty() ? "the compute node" : "compute node " + v.node;
  if (v.userns_disabled && !v.sysctls_to_set.empty()) {
    std::string set, cmd;
    for (const auto& s : v.sysctls_to_set) {
      set += (set.empty() ? "" : " and ") + s;
      cmd += " " + s;
    }
    return "User namespaces are disabled on " + node +
           ": isolated kernels cannot run there. Ask the cluster "
           "admins to set " +
           set + " on the compute nodes ('sysctl -w" + cmd + "', and in /etc/sysctl.d/ to keep it).";
  }
  if (!v.userns_failure.empty())
    return "isolate cannot create its namespaces on " + node + " (" + v.userns_failure +
           "): show this line to the cluster admins.";
  return "";
}

int run_doctor_slurm(const std::vector<std::string>& slurm_opts, bool kernels) {
  std::error_code ec;
  std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) return print_error(sys_error("find this program (/proc/self/exe)", ec.value()));
  if (auto srun = find_slurm_command("srun"); !srun) return print_error(srun.error());
  auto argv = doctor_srun_argv(self, slurm_opts, kernels);
  std::string shown;
  for (const auto& a : argv) shown += (shown.empty() ? "" : " ") + a;
  std::printf("Running the checks on a compute node: %s\n", shown.c_str());
  std::fflush(stdout);
  // Long enough to wait for a node on a busy cluster; Ctrl-C reaches srun
  // too (same foreground process group), which cancels its job.
  auto r = run_capture(argv, {}, 3600);
  if (!r) return print_error(r.error());
  NodeVerdict v = read_node_verdict(r->out);
  if (!v.completed) {
    std::string why = r->err;
    while (!why.empty() && why.back() == '\n') why.pop_back();
    for (auto& c : why)
      if (c == '\n') c = ' ';
    // srun reports a program the node cannot start through slurmstepd's execve().
    const bool not_there = why.find("execve") != std::string::npos;
    return print_error(Error{"srun " + self + " doctor", 0,
                             "exit " + std::to_string(r->status) + (why.empty() ? "" : ": " + why),
                             not_there ? "install isolated-kernel at the same path on the compute nodes, or on "
                                         "a filesystem they share"
                                       : "check the --slurm-opt options ('sinfo' lists the partitions)",
                             kExitSetup});
  }
  std::fputs(r->out.c_str(), stdout);
  if (auto advice = admin_advice(v); !advice.empty()) std::printf("%s\n", advice.c_str());
  return r->status == 0 ? 0 : 1;
}

}  // namespace ik
