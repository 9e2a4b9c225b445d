#include "pool/prescan.hpp"

#include "kernelspec/spec_read.hpp"
#include "pool/split.hpp"

namespace ik::pool {

namespace {

// jupyter_client's format_kernel_cmd: {resource_dir} becomes the
// kernelspec's directory; {connection_file} stays the pool's placeholder.
std::string substitute(std::string arg, const std::string& resource_dir) {
  const std::string from = "{resource_dir}";
  for (size_t p = arg.find(from); p != std::string::npos; p = arg.find(from, p + resource_dir.size()))
    arg.replace(p, from.size(), resource_dir);
  return arg;
}

}  // namespace

std::optional<PooledSpec> pooled_spec(const KernelspecInfo& k, const std::map<std::string, std::string>& env,
                                      std::string* problem) {
  if (!k.error.empty() || !is_isolated(k)) return std::nullopt;
  auto settings = kernelspec_settings(k.spec, k.resource_dir);
  if (!settings) {
    const auto& iso = k.spec.value("metadata", nlohmann::json::object());
    if (problem && iso.is_object() && iso.contains("isolated_kernel"))
      *problem = k.name + ": " + settings.error().describe();
    return std::nullopt;
  }
  if (settings->opts.pool <= 0) return std::nullopt;
  PooledSpec out;
  out.name = k.name;
  out.size = settings->opts.pool;
  const auto& argv = k.spec["argv"];
  for (size_t i = 1; i < argv.size(); ++i) {
    if (!argv[i].is_string()) return std::nullopt;
    out.spec.push_back(substitute(argv[i].get<std::string>(), k.resource_dir));
  }
  for (const auto& [name, value] : env)
    if (!launch_time_env(name)) out.env[name] = value;
  const auto spec_env = k.spec.value("env", nlohmann::json::object());
  if (spec_env.is_object())
    for (const auto& [name, value] : spec_env.items())
      if (value.is_string()) out.env[name] = value.get<std::string>();
  return out;
}

PrescanResult prescan_kernelspecs(char** environ) {
  PrescanResult r;
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  auto specs = find_kernelspecs();
  if (!specs) {
    r.problems.push_back("pool: scan of the installed kernelspecs: " + specs.error().describe());
    return r;
  }
  for (const auto& [name, k] : *specs) {
    std::string problem;
    if (auto p = pooled_spec(k, env, &problem)) r.specs.push_back(std::move(*p));
    else if (!problem.empty()) r.problems.push_back("pool: kernelspec " + problem);
  }
  return r;
}

}  // namespace ik::pool
