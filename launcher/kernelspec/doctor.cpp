#include "kernelspec/doctor.hpp"

#include <seccomp.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/file_io.hpp"
#include "host/cgroup_probe.hpp"
#include "plan/cgroup.hpp"
#include "kernelspec/install.hpp"
#include "kernelspec/jupyter.hpp"
#include "kernelspec/spec_read.hpp"
#include "kernelspec/subprocess.hpp"

namespace ik {
namespace {

enum class Verdict { kPass, kWarn, kFail };

struct Tally {
  int failed = 0;
  void line(Verdict v, const std::string& what, const std::string& detail) {
    const char* tag = v == Verdict::kPass ? "PASS" : v == Verdict::kWarn ? "WARN" : "FAIL";
    if (v == Verdict::kFail) ++failed;
    std::printf("%-4s  %-28s %s\n", tag, what.c_str(), detail.c_str());
  }
};

void check_kernel_version(Tally& t) {
  utsname u{};
  uname(&u);
  int major = 0, minor = 0;
  std::sscanf(u.release, "%d.%d", &major, &minor);
  int v = major * 100 + minor;
  if (v < 503) t.line(Verdict::kFail, "Linux kernel", std::string(u.release) + ": needs 5.3 or newer (pidfd)");
  else if (v < 512)
    t.line(Verdict::kWarn, "Linux kernel",
           std::string(u.release) + ": before 5.12 read-only mounts are applied to the top mount only");
  else t.line(Verdict::kPass, "Linux kernel", u.release);
}

void check_namespaces(Tally& t) {
  std::string isolate = sibling_program("isolate");
  auto r = run_capture({isolate, "--", "/bin/true"}, {}, 30);
  if (r && r->status == 0) {
    t.line(Verdict::kPass, "user namespaces", "a sandbox starts (user, mount, pid, ipc, uts, net, cgroup)");
    return;
  }
  std::string why = r ? r->err : r.error().describe();
  while (!why.empty() && why.back() == '\n') why.pop_back();
  t.line(Verdict::kFail, "user namespaces", why.empty() ? "isolate failed" : why);
}

void check_seccomp(Tally& t) {
  std::ifstream status("/proc/self/status");
  std::string line;
  bool has = false;
  while (std::getline(status, line))
    if (line.rfind("Seccomp:", 0) == 0) has = true;
  unsigned api = seccomp_api_get();
  if (has && api >= 1)
    t.line(Verdict::kPass, "seccomp", "filters supported (libseccomp API level " + std::to_string(api) + ")");
  else t.line(Verdict::kFail, "seccomp", "not supported by this kernel: only --seccomp=off works");
}

// Whether --memory and --nproc would go through a cgroup v2 (memory.max,
// pids.max) or rlimits, as plan_limits() decides it for this process.
void check_cgroups(Tally& t) {
  CgroupHost host = probe_cgroup_host();
  Limits both;
  both.memory_bytes = 1ull << 30;
  both.nproc = 100;
  auto lp = plan_limits(both, LimitsVia::kAuto, host);
  const bool memory = lp && lp->cgroup.use && !lp->rlimits.memory_bytes;
  const bool pids = lp && lp->cgroup.use && !lp->rlimits.nproc;
  const std::string why = lp ? lp->cgroup.why : lp.error().describe();
  const char* what = "cgroup v2 limits";
  if (memory && pids)
    t.line(Verdict::kPass, what,
           host.dir + " is delegated with memory and pids: --memory and --nproc use memory.max and pids.max");
  else if (memory || pids) t.line(Verdict::kWarn, what, why);
  else t.line(Verdict::kWarn, what, why.substr(0, why.rfind(": --")) + ": limits use rlimits");
}

void check_sysctls(Tally& t) {
  std::string max = read_sysctl("user/max_user_namespaces");
  std::string apparmor = read_sysctl("kernel/apparmor_restrict_unprivileged_userns");
  std::string detail = "user.max_user_namespaces=" + (max.empty() ? "?" : max);
  if (!apparmor.empty()) detail += ", kernel.apparmor_restrict_unprivileged_userns=" + apparmor;
  t.line(max == "0" || apparmor == "1" ? Verdict::kFail : Verdict::kPass, "namespace sysctls", detail);
}

void check_kernels(Tally& t) {
  auto specs = find_kernelspecs();
  if (!specs) {
    t.line(Verdict::kFail, "jupyter_client", specs.error().describe());
    return;
  }
  t.line(Verdict::kPass, "jupyter_client", "found with " + jupyter_python());
  int n = 0;
  for (const auto& [name, k] : *specs) {
    if (!k.error.empty()) {
      // Jupyter skips it; whether it was meant to be isolated is unknown.
      t.line(Verdict::kWarn, "kernelspec " + name, k.error + " (Jupyter does not offer it)");
      continue;
    }
    if (!is_isolated(k)) continue;
    ++n;
    auto settings = kernelspec_settings(k.spec, k.resource_dir);
    if (!settings) {
      t.line(Verdict::kFail, "kernel " + name, settings.error().describe() + " (" + k.resource_dir + ")");
      continue;
    }
    std::string kernels_dir = std::filesystem::path(k.resource_dir).parent_path().string();
    const auto& preload = settings->opts.pool > 0 ? settings->opts.pool_preload : std::vector<std::string>{};
    auto c = check_kernel_starts(kernels_dir, name, 60, preload);
    if (c && c->ok && !c->import_error.empty()) {
      t.line(Verdict::kFail, "kernel " + name,
             "pool_preload " + c->import_error + ": its pool cannot fill (kernels start cold) (" + k.resource_dir +
                 ")");
    } else if (c && c->ok) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "ready in %.2f s", c->seconds);
      t.line(Verdict::kPass, "kernel " + name, std::string(buf) + " (" + k.resource_dir + ")");
    } else {
      std::string why = c ? c->error + (c->stderr_tail.empty() ? "" : " | " + c->stderr_tail) : c.error().describe();
      t.line(Verdict::kFail, "kernel " + name, why);
    }
  }
  if (n == 0) t.line(Verdict::kWarn, "isolated kernelspecs", "none installed: run 'isolated-kernel install'");
}

}  // namespace

int run_doctor(bool kernels) {
  Tally t;
  // Run by `doctor --slurm` through srun: name the node the lines are about.
  if (const char* node = std::getenv("SLURMD_NODENAME"); node && *node) {
    const char* job = std::getenv("SLURM_JOB_ID");
    t.line(Verdict::kPass, "Slurm node", std::string(node) + (job ? std::string(" (job ") + job + ")" : ""));
  }
  check_kernel_version(t);
  check_sysctls(t);
  check_namespaces(t);
  check_seccomp(t);
  check_cgroups(t);
  if (kernels) check_kernels(t);
  std::printf("%s\n", t.failed ? "Some checks failed." : "All required checks passed.");
  return t.failed ? 1 : 0;
}

}  // namespace ik
