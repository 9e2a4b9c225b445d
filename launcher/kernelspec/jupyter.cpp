#include "kernelspec/jupyter.hpp"

#include <climits>
#include <cstdlib>

#include "kernelspec/subprocess.hpp"

namespace ik {
namespace {
using nlohmann::json;

constexpr const char* kListSpecs = R"PY(
import json
from jupyter_client.kernelspec import KernelSpecManager
print(json.dumps(KernelSpecManager().get_all_specs()))
)PY";

constexpr const char* kDirs = R"PY(
import json, os, sys
from jupyter_core import paths
print(json.dumps({"user": paths.jupyter_data_dir(),
                  "sys_prefix": os.path.join(sys.prefix, "share", "jupyter"),
                  "system": paths.SYSTEM_JUPYTER_PATH[0]}))
)PY";

constexpr const char* kProbe = R"PY(
import json, os, sys
print(json.dumps({"executable": os.path.realpath(sys.executable), "prefix": sys.prefix,
                  "base_prefix": getattr(sys, "base_prefix", sys.prefix),
                  "paths": [p for p in sys.path if p and os.path.exists(p)]}))
)PY";

constexpr const char* kStart = R"PY(
import json, shutil, sys, time, tempfile
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
kernels_dir, name, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
ksm = KernelSpecManager()
ksm.kernel_dirs = [kernels_dir]
err = tempfile.TemporaryFile()
km = KernelManager(kernel_name=name, kernel_spec_manager=ksm)
result = {"ok": False}
# In a scratch folder: the kernel mounts its working directory, and the
# caller's may be anything (even /).
workdir = tempfile.mkdtemp(prefix="isolated-kernel-check-")
t0 = time.monotonic()
try:
    # In a scratch folder: the kernel mounts its working directory, and the
    # caller's may be anything (even /).
    km.start_kernel(stderr=err, cwd=workdir)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=timeout)
    result["seconds"] = time.monotonic() - t0
    kc.kernel_info(reply=True, timeout=timeout)
    result["ok"] = True
    kc.stop_channels()
except Exception as e:
    result["error"] = "%s: %s" % (type(e).__name__, e)
finally:
    try:
        if km.has_kernel:
            km.shutdown_kernel(now=not result["ok"])
    except Exception:
        pass
    err.seek(0)
    lines = [l for l in err.read().decode(errors="replace").splitlines()
             if l.strip() and "frozen modules" not in l and "Debugg" not in l and "PYDEVD" not in l]
    result["stderr"] = "\n".join(lines[-12:])
    shutil.rmtree(workdir, ignore_errors=True)
print(json.dumps(result))
)PY";

Result<json> run_python_json(const std::string& python, const char* script, const std::vector<std::string>& args = {},
                             int timeout = 60) {
  std::vector<std::string> argv{python, "-c", script};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run_capture(argv, {{"PYDEVD_DISABLE_FILE_VALIDATION", "1"}}, timeout);
  if (!r) return r.error();
  if (r->status != 0) {
    std::string err = r->err.size() > 600 ? r->err.substr(r->err.size() - 600) : r->err;
    return Error{"run " + python, 0, "exit status " + std::to_string(r->status) + ": " + err,
                 "is jupyter_client installed for it? (apt-get install python3-jupyter-client)", kExitSetup};
  }
  auto last_line = r->out.substr(r->out.rfind('\n', r->out.size() - 2) + 1);
  try {
    return json::parse(last_line);
  } catch (const json::exception& e) {
    return Error{"run " + python, 0, std::string("unexpected output: ") + e.what(), {}, kExitSetup};
  }
}

}  // namespace

Result<std::map<std::string, KernelspecInfo>> find_kernelspecs() {
  auto j = run_python_json(jupyter_python(), kListSpecs);
  if (!j) return j.error();
  std::map<std::string, KernelspecInfo> out;
  for (const auto& [name, v] : j->items())
    out[name] = KernelspecInfo{name, v.value("resource_dir", ""), v.value("spec", json::object())};
  return out;
}

bool is_isolated(const KernelspecInfo& k) {
  if (!k.spec.contains("argv") || !k.spec["argv"].is_array() || k.spec["argv"].empty()) return false;
  std::string argv0 = k.spec["argv"][0].get<std::string>();
  return argv0.size() >= 24 && argv0.compare(argv0.size() - 24, 24, "isolated-kernel-launcher") == 0;
}

Result<JupyterDirs> jupyter_dirs() {
  auto j = run_python_json(jupyter_python(), kDirs);
  if (!j) return j.error();
  return JupyterDirs{(*j)["user"], (*j)["sys_prefix"], (*j)["system"]};
}

Result<InterpreterInfo> probe_interpreter(const std::string& python) {
  auto j = run_python_json(python, kProbe);
  if (!j) return j.error();
  InterpreterInfo info;
  info.executable = (*j)["executable"];
  info.prefix = (*j)["prefix"];
  info.base_prefix = (*j)["base_prefix"];
  for (const auto& p : (*j)["paths"]) info.paths.push_back(p);
  return info;
}

Result<StartCheck> check_kernel_starts(const std::string& kernels_dir, const std::string& name, int timeout_seconds) {
  auto j = run_python_json(jupyter_python(), kStart, {kernels_dir, name, std::to_string(timeout_seconds)},
                           timeout_seconds + 30);
  if (!j) return j.error();
  StartCheck c;
  c.ok = (*j).value("ok", false);
  c.seconds = (*j).value("seconds", 0.0);
  c.error = (*j).value("error", "");
  c.stderr_tail = (*j).value("stderr", "");
  return c;
}

}  // namespace ik
