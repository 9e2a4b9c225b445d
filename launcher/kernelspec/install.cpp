#include "kernelspec/install.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "common/log.hpp"
#include "host/read_host.hpp"
#include "kernelspec/plan_preview.hpp"
#include "kernelspec/subprocess.hpp"
#include "parse/json_text.hpp"
#include "parse/config.hpp"
#include "common/paths.hpp"
#include "plan/planner.hpp"

extern char** environ;

namespace ik {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string self_dir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

std::string which(const std::string& prog) {
  if (prog.find('/') != std::string::npos) return prog;
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string cand = p.substr(start, end - start) + "/" + prog;
    if (access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return prog;
}

Result<WrappedKernel> wrapped_from_spec(const InstallRequest& req, const KernelspecInfo& source) {
  auto w = wrapped_kernel(req.from, source);
  if (!w) return w.error();
  w->argv[0] = which(w->argv[0]);
  return w;
}

Status detect_mounts(WrappedKernel& w) {
  const std::string& argv0 = w.argv[0];
  if (looks_like_python(argv0)) {
    auto info = probe_interpreter(argv0);
    if (!info) return info.error();
    w.detected_mounts = needed_directories(*info);
  } else {
    w.detected_mounts = program_directories(argv0);
  }
  return ok();
}

Result<std::string> kernels_dir_for(const InstallRequest& req) {
  if (req.where == InstallWhere::kPrefix) return req.prefix + "/share/jupyter/kernels";
  auto dirs = jupyter_dirs();
  if (!dirs) return dirs.error();
  switch (req.where) {
    case InstallWhere::kUser: return dirs->user + "/kernels";
    case InstallWhere::kSysPrefix: return dirs->sys_prefix + "/kernels";
    default: break;
  }
  // System-wide when allowed, like `jupyter kernelspec install`; else the
  // user's directory (and say so).
  std::string system = dirs->system + "/kernels";
  std::error_code ec;
  fs::create_directories(system, ec);
  if (!ec && access(system.c_str(), W_OK) == 0) return system;
  std::printf("%s is not writable: installing for this user only (%s)\n", system.c_str(),
              (dirs->user + "/kernels").c_str());
  return dirs->user + "/kernels";
}

Status write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p);
  out << text;
  if (!out) return sys_error("write " + p.string());
  return ok();
}

// Logos and other resources: ours for the ready-made python3 kernel, the
// wrapped kernelspec's otherwise.
Status copy_resources(const std::string& from_dir, const fs::path& to) {
  std::error_code ec;
  if (from_dir.empty() || !fs::is_directory(from_dir)) return ok();
  for (const auto& entry : fs::directory_iterator(from_dir, ec)) {
    if (entry.path().filename() == "kernel.json" || !entry.is_regular_file()) continue;
    fs::copy_file(entry.path(), to / entry.path().filename(), fs::copy_options::overwrite_existing, ec);
    if (ec) return Error{"copy " + entry.path().string(), ec.value(), {}, {}, kExitSetup};
  }
  return ok();
}

struct TempDir {
  fs::path path;
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

bool imports_outside(const std::string& python, const std::string& module) {
  auto r = run_capture({python, "-c", "import " + module}, {}, 60);
  return r && r->status == 0;
}

std::string start_failure_hint(const StartCheck& c, const WrappedKernel& w, const InstallRequest& req) {
  const std::string& t = c.stderr_tail;
  if (req.sandbox.limits.memory_bytes &&
      (t.find("can't start new thread") != std::string::npos || t.find("MemoryError") != std::string::npos ||
       t.find("Cannot allocate memory") != std::string::npos ||
       t.find("killed by the memory limit") != std::string::npos))
    return "the --memory limit (" + std::to_string(*req.sandbox.limits.memory_bytes >> 20) +
           " MiB) is too low for this kernel: try --memory 1G or more";
  if (t.find("No module named") != std::string::npos && looks_like_python(w.argv[0]) &&
      !imports_outside(w.argv[0], "ipykernel"))
    return "ipykernel is not installed for " + w.argv[0] +
           " even outside the sandbox: install it there (pip install ipykernel), or create the venv with "
           "--system-site-packages";
  if (t.find("No module named") != std::string::npos || t.find("not found inside the sandbox") != std::string::npos) {
    std::string dirs;
    for (const auto& d : w.detected_mounts) dirs += " ro:" + d;
    return "a directory the kernel needs is not mounted: add it with --mnt ro:DIR (mounted now:" +
           (dirs.empty() ? std::string(" none") : dirs) + ")";
  }
  if (t.find("create namespaces") != std::string::npos)
    return "user namespaces are unavailable: run 'isolated-kernel doctor'";
  return "run 'isolated-kernel doctor', or start it by hand with -v to see each step";
}

// install --print-plan: the kernel.json it would write and the plan its
// kernel would get, as `show` prints them; nothing is written or started.
Result<std::string> print_install_plan(const InstallRequest& req, const WrappedKernel& w, const std::string& launcher,
                                       const HostInfo& host) {
  json spec = make_isolated_spec(req, w, launcher);
  auto dirs = jupyter_dirs();
  if (!dirs) return dirs.error();
  const std::string resource_dir = "{resource_dir}";  // not installed: Jupyter's placeholder
  auto plan = preview_plan(spec, resource_dir, host, dirs->runtime);
  if (!plan) return plan.error();
  json out{{"name", req.name},
           {"kernel.json", spec},
           {"plan (for a kernel started in the current directory)", plan_to_json(*plan)}};
  std::cout << display_json(out) << std::endl;
  return std::string();
}

}  // namespace

std::string sibling_program(const std::string& name) {
  std::string p = self_dir() + "/" + name;
  if (access(p.c_str(), X_OK) == 0) return p;
  return which(name);
}

std::string template_dir(const std::string& name) {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("IK_DATA_DIR")) candidates.push_back(std::string(env) + "/kernelspecs/" + name);
  candidates.push_back(self_dir() + "/../share/isolated-kernel/kernelspecs/" + name);
  candidates.push_back(std::string(IK_DATADIR) + "/kernelspecs/" + name);
#ifdef IK_SOURCE_DIR
  candidates.push_back(std::string(IK_SOURCE_DIR) + "/kernelspecs/" + name);
#endif
  for (const auto& c : candidates)
    if (access((c + "/kernel.json").c_str(), R_OK) == 0) return fs::weakly_canonical(c).string();
  return {};
}

json make_isolated_spec(const InstallRequest& req, const WrappedKernel& w, const std::string& launcher) {
  json argv = json::array({launcher, "--kernelspec", "{resource_dir}", "--"});
  for (const auto& a : w.argv) argv.push_back(a);
  std::string display = req.display_name;
  if (display.empty()) {
    display = spec_string(w.spec, "display_name", req.from);
    for (const char* suffix : {" (ipykernel)"})
      if (display.size() > std::strlen(suffix) &&
          display.compare(display.size() - std::strlen(suffix), std::string::npos, suffix) == 0)
        display.resize(display.size() - std::strlen(suffix));
    // Several installs (one per course) must be told apart in the menus.
    display += req.name == InstallRequest{}.name ? " (isolated)" : " (isolated: " + req.name + ")";
  }
  Options settings = req.sandbox;
  // The kernel's working directory (the notebook's folder) is always mounted
  // first; then what the interpreter needs, read-only; then the user's mounts.
  std::vector<MountEntry> mounts;
  MountEntry cwd{};
  cwd.text = cwd.dest = ".";
  mounts.push_back(cwd);
  for (const auto& d : w.detected_mounts) {
    MountEntry e{};
    e.text = "ro:" + d;
    e.dest = d;
    e.readonly = true;
    mounts.push_back(e);
  }
  for (const auto& m : req.sandbox.mounts) mounts.push_back(m);
  settings.mounts = mounts;
  // A copy: items() of the temporary that value() returns would dangle.
  const json env = w.spec.contains("env") && w.spec["env"].is_object() ? w.spec["env"] : json::object();
  for (const auto& [k, v] : env.items())
    if (v.is_string()) settings.setenv.emplace_back(k, v.get<std::string>());
  json config = options_to_config_json(settings);
  // Keep the stored settings short: drop what equals the defaults.
  Options defaults;
  json d = options_to_config_json(defaults);
  for (auto it = d.begin(); it != d.end(); ++it)
    if (config.contains(it.key()) && config[it.key()] == it.value() && it.key() != "network") config.erase(it.key());
  json metadata = w.spec.contains("metadata") && w.spec["metadata"].is_object() ? w.spec["metadata"] : json::object();
  metadata[kKernelspecMetadataKey] = config;
  metadata["isolated_kernel_install"] = {{"wraps", req.python.empty() ? req.from : req.python},
                                         {"version", IK_VERSION},
                                         {"detected_mounts", w.detected_mounts}};
  return json{{"argv", argv},
              {"display_name", display},
              {"language", spec_string(w.spec, "language", "python")},
              {"interrupt_mode", "signal"},
              {"env", json::object()},
              {"metadata", metadata}};
}

Result<WrappedKernel> wrapped_kernel(const std::string& from, const KernelspecInfo& source) {
  if (!source.error.empty())
    return usage_error("kernelspec '" + from + "': " + source.error, "fix it, or wrap another with --from");
  if (is_isolated(source))
    return usage_error("kernelspec '" + from + "' is already isolated", "wrap the kernelspec it was made from");
  WrappedKernel w;
  w.spec = source.spec;
  const json argv = source.spec.contains("argv") ? source.spec["argv"] : json::array();
  for (const auto& a : argv.is_array() ? argv : json::array()) {
    if (!a.is_string()) return usage_error("kernelspec '" + from + "': argv must be an array of strings");
    w.argv.push_back(a.get<std::string>());
  }
  if (w.argv.empty()) return usage_error("kernelspec '" + from + "' has an empty argv");
  return w;
}

Status validate_request(const InstallRequest& req) {
  // As jupyter_client's kernelspec names: no path separators, no empty name.
  bool good = !req.name.empty() && req.name != "." && req.name != "..";
  for (char c : req.name)
    good = good && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  if (!good)
    return usage_error("--name '" + req.name + "' is not a valid kernelspec name",
                       "use letters, digits, '.', '_' and '-', e.g. python3-isolated");
  if (!req.python.empty() && access(which(req.python).c_str(), X_OK) != 0)
    return Error{"--python " + req.python, errno, "no such interpreter", "give the path of a python executable",
                 kExitUsage};
  if (!req.python.empty() && req.from != "python3")
    return usage_error("--python and --from exclude each other", "wrap a kernelspec or an interpreter, not both");
  return ok();
}

Result<std::string> install_kernelspec(const InstallRequest& req) {
  IK_TRY(validate_request(req));
  // The settings first, with isolate's one-line errors (a missing --mnt
  // path is status 2), before anything is probed or started.
  auto host = read_host_info(environ);
  if (!host) return host.error();
  {
    // Without the "." every kernel mounts: the caller may be anywhere (even /).
    Options o = req.sandbox;
    o.argv = {"true"};
    auto plan = build_plan(o, *host);
    if (!plan) return plan.error();
  }
  const std::string launcher = sibling_program("isolated-kernel-launcher");
  if (access(launcher.c_str(), X_OK) != 0)
    return Error{"find isolated-kernel-launcher", ENOENT, launcher, "install the programs with cmake --install",
                 kExitSetup};
  WrappedKernel w;
  std::string resources;
  if (!req.python.empty()) {
    w.spec = {{"display_name", "Python 3"}, {"language", "python"}};
    w.argv = {which(req.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"};
    resources = template_dir("python3-isolated");
  } else {
    auto specs = find_kernelspecs();
    if (!specs) return specs.error();
    auto it = specs->find(req.from);
    if (it == specs->end()) {
      std::string names;
      for (const auto& [n, k] : *specs) names += " " + n;
      return usage_error("no kernelspec named '" + req.from + "'", "installed:" + names);
    }
    auto wk = wrapped_from_spec(req, it->second);
    if (!wk) return wk.error();
    w = *wk;
    resources = it->second.resource_dir;
    if (req.from == "python3" && !template_dir("python3-isolated").empty())
      resources = template_dir("python3-isolated");
  }
  IK_TRY(detect_mounts(w));
  if (req.sandbox.print_plan) return print_install_plan(req, w, launcher, *host);
  for (const auto& d : w.detected_mounts) std::printf("mounting read-only for the interpreter: %s\n", d.c_str());

  auto kernels_dir = kernels_dir_for(req);
  if (!kernels_dir) return kernels_dir.error();
  fs::path target = fs::path(*kernels_dir) / req.name;
  if (fs::exists(target) && !req.replace)
    return usage_error("kernelspec " + target.string() + " already exists", "add --replace to overwrite it");

  // Build and check in a staging directory; the user's files are untouched
  // until the new kernelspec has proven that it starts.
  TempDir staging;
  char tmpl[] = "/tmp/isolated-kernel-install.XXXXXX";
  if (!mkdtemp(tmpl)) return sys_error("mkdtemp");
  staging.path = tmpl;
  chmod(tmpl, 0755);
  fs::path stage = staging.path / req.name;
  fs::create_directories(stage);
  IK_TRY(copy_resources(resources, stage));
  json spec = make_isolated_spec(req, w, launcher);
  std::string text;
  try {
    text = spec.dump(1);
  } catch (const json::exception&) {  // a --mnt, --setenv... that is not UTF-8
    return usage_error("a setting is not valid UTF-8, which kernel.json cannot hold",
                       "rename the directory, or mount it through a UTF-8 path (DEST=SRC)");
  }
  IK_TRY(write_text(stage / "kernel.json", text + "\n"));

  if (req.check) {
    std::printf("checking that %s starts inside the sandbox...\n", req.name.c_str());
    std::fflush(stdout);
    auto c = check_kernel_starts(staging.path.string(), req.name, 60, req.sandbox.pool_preload);
    if (!c) return c.error();
    if (!c->ok) {
      Error e{"kernel '" + req.name + "' did not start in the sandbox", 0, c->error, start_failure_hint(*c, w, req),
              kExitSetup};
      if (!c->stderr_tail.empty()) std::fprintf(stderr, "--- kernel stderr ---\n%s\n---\n", c->stderr_tail.c_str());
      return e;
    }
    if (!c->import_error.empty())
      return usage_error("--pool-preload " + c->import_error + " (the kernel cannot import it in the sandbox)",
                         "check the name, or install the module where the kernel's Python finds it");
    std::printf("ok: kernel_info reply after %.2f s%s\n", c->seconds,
                req.sandbox.pool_preload.empty() ? "" : ", the --pool-preload modules import");
  }
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  if (ec) return Error{"create " + target.parent_path().string(), ec.value(), {}, "try --user", kExitSetup};
  if (fs::exists(target)) fs::remove_all(target, ec);
  fs::copy(stage, target, fs::copy_options::recursive, ec);
  if (ec) return Error{"install into " + target.string(), ec.value(), {}, "try --user or --prefix", kExitSetup};
  fs::permissions(target,
                  fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read |
                      fs::perms::others_exec,
                  ec);
  return target.string();
}

}  // namespace ik
