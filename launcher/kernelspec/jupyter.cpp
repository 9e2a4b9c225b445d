#include "kernelspec/jupyter.hpp"

#include <climits>
#include <cstdlib>

#include "kernelspec/spec_read.hpp"
#include "kernelspec/subprocess.hpp"
#include "parse/json_text.hpp"

namespace ik {
namespace {
using nlohmann::json;

constexpr const char* kListSpecs = R"PY(
import json
from jupyter_client.kernelspec import KernelSpecManager
print(json.dumps(KernelSpecManager().find_kernel_specs()))
)PY";

constexpr const char* kDirs = R"PY(
import json, os, sys
from jupyter_core import paths
print(json.dumps({"user": paths.jupyter_data_dir(),
                  "sys_prefix": os.path.join(sys.prefix, "share", "jupyter"),
                  "system": paths.SYSTEM_JUPYTER_PATH[0],
                  "runtime": paths.jupyter_runtime_dir()}))
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
preload = json.loads(sys.argv[4]) if len(sys.argv) > 4 else []
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
    # What a waiting pooled kernel will import (pool_preload): the first
    # that this kernel cannot import, as "module: Error: message" (also an
    # import that does not answer in time or ends the kernel).
    for mod in preload:
        try:
            reply = kc.execute_interactive("import importlib; importlib.import_module(%r)" % mod, timeout=timeout,
                                           output_hook=lambda msg: None)
        except Exception as e:
            result["import_error"] = "%s: %s: %s" % (mod, type(e).__name__, e)
            break
        if reply["content"]["status"] != "ok":
            c = reply["content"]
            result["import_error"] = "%s: %s: %s" % (mod, c.get("ename", "error"), c.get("evalue", ""))
            break
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
  // jupyter_client finds them (its search path and precedence); we read
  // them, so that a broken kernel.json, which it skips with a log line, is
  // named with its error instead of missing.
  auto j = run_python_json(jupyter_python(), kListSpecs);
  if (!j) return j.error();
  std::map<std::string, KernelspecInfo> out;
  if (!j->is_object()) return out;
  for (const auto& [name, v] : j->items()) {
    if (!v.is_string()) continue;
    out[name] = read_kernelspec(name, v.get<std::string>());
  }
  return out;
}

KernelspecInfo read_kernelspec(const std::string& name, const std::string& resource_dir) {
  KernelspecInfo k{name, resource_dir, json::object(), {}};
  auto spec = read_json_file(resource_dir + "/kernel.json", "kernelspec");
  if (!spec) k.error = spec.error().describe();
  else if (!spec->is_object()) k.error = resource_dir + "/kernel.json: must be a JSON object";
  else k.spec = *spec;
  return k;
}

bool is_isolated(const KernelspecInfo& k) { return is_isolated_spec(k.spec); }

std::string spec_string(const json& spec, const char* key, const std::string& fallback) {
  if (spec.is_object() && spec.contains(key) && spec[key].is_string()) return spec[key].get<std::string>();
  return fallback;
}

Result<JupyterDirs> jupyter_dirs() {
  auto j = run_python_json(jupyter_python(), kDirs);
  if (!j) return j.error();
  return JupyterDirs{spec_string(*j, "user", ""), spec_string(*j, "sys_prefix", ""), spec_string(*j, "system", ""),
                     spec_string(*j, "runtime", "")};
}

Result<InterpreterInfo> probe_interpreter(const std::string& python) {
  auto j = run_python_json(python, kProbe);
  if (!j) return j.error();
  // The interpreter's output is not ours to trust: checked reads only.
  InterpreterInfo info;
  info.executable = spec_string(*j, "executable", "");
  info.prefix = spec_string(*j, "prefix", "");
  info.base_prefix = spec_string(*j, "base_prefix", "");
  if (j->is_object() && j->contains("paths") && (*j)["paths"].is_array())
    for (const auto& p : (*j)["paths"])
      if (p.is_string()) info.paths.push_back(p.get<std::string>());
  if (info.executable.empty())
    return Error{"probe " + python, 0, "it did not report its sys.executable", "give the path of a python executable",
                 kExitUsage};
  return info;
}

Result<StartCheck> check_kernel_starts(const std::string& kernels_dir, const std::string& name, int timeout_seconds,
                                       const std::vector<std::string>& preload) {
  auto j = run_python_json(jupyter_python(), kStart,
                           {kernels_dir, name, std::to_string(timeout_seconds), json(preload).dump()},
                           timeout_seconds * static_cast<int>(1 + preload.size()) + 30);  // the start, then each import
  if (!j) return j.error();
  StartCheck c;
  c.ok = j->is_object() && j->contains("ok") && (*j)["ok"].is_boolean() && (*j)["ok"].get<bool>();
  c.seconds =
      j->is_object() && j->contains("seconds") && (*j)["seconds"].is_number() ? (*j)["seconds"].get<double>() : 0.0;
  c.error = spec_string(*j, "error", "");
  c.stderr_tail = spec_string(*j, "stderr", "");
  c.import_error = spec_string(*j, "import_error", "");
  return c;
}

}  // namespace ik
