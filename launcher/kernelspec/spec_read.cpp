#include "kernelspec/spec_read.hpp"

#include <CLI/CLI.hpp>

#include "parse/cli.hpp"
#include "parse/config.hpp"
#include "parse/units.hpp"

namespace ik {
using nlohmann::json;

namespace {

constexpr const char* kLauncher = "isolated-kernel-launcher";

std::vector<std::string> string_argv(const json& spec, std::string& bad) {
  std::vector<std::string> out;
  if (!spec.is_object() || !spec.contains("argv")) {
    bad = "kernel.json has no argv";
    return out;
  }
  const json& argv = spec["argv"];
  if (!argv.is_array()) {
    bad = "kernel.json: argv must be an array of strings";
    return out;
  }
  for (const auto& a : argv) {
    if (!a.is_string()) {
      bad = "kernel.json: argv must be an array of strings";
      return {};
    }
    out.push_back(a.get<std::string>());
  }
  return out;
}

// Replaces `key` ({resource_dir}, {connection_file}) as jupyter_client does at launch.
std::string expand(std::string a, const std::string& key, const std::string& value) {
  for (size_t p = a.find(key); p != std::string::npos; p = a.find(key, p + value.size()))
    a.replace(p, key.size(), value);
  return a;
}

// The launcher's own options besides the sandbox ones (its main() adds them).
struct LauncherOnly {
  std::string connection_file, max_message_size;
};

}  // namespace

bool is_isolated_spec(const json& spec) {
  if (!spec.is_object() || !spec.contains("argv") || !spec["argv"].is_array() || spec["argv"].empty() ||
      !spec["argv"][0].is_string())
    return false;
  const std::string argv0 = spec["argv"][0].get<std::string>();
  const std::string name = kLauncher;
  return argv0.size() >= name.size() && argv0.compare(argv0.size() - name.size(), name.size(), name) == 0;
}

Result<KernelspecSettings> kernelspec_settings(const json& spec, const std::string& resource_dir,
                                               const std::string& connection_file) {
  std::string bad;
  std::vector<std::string> argv = string_argv(spec, bad);
  if (!bad.empty()) return usage_error(bad);
  if (argv.empty()) return usage_error("kernel.json: argv is empty");
  KernelspecSettings out;
  const std::string meta_where = "kernel.json metadata." + std::string(kKernelspecMetadataKey);
  bool has_metadata = false;
  if (spec.contains("metadata")) {
    const json& md = spec["metadata"];
    if (!md.is_object()) return usage_error("kernel.json: metadata must be an object");
    if (md.contains(kKernelspecMetadataKey)) {
      has_metadata = true;
      IK_TRY(apply_config_json(md[kKernelspecMetadataKey], meta_where, out.opts));
    }
  }
  // argv[1..]: launcher flags, then the kernel. "--kernelspec {resource_dir}"
  // is this very file, whose metadata is applied above (first, as the
  // launcher does).
  std::vector<std::string> args;
  for (size_t i = 1; i < argv.size(); ++i) {
    std::string a = expand(argv[i], "{resource_dir}", resource_dir);
    args.push_back(expand(a, "{connection_file}", connection_file));  // also inside --mnt lists
  }
  CLI::App app("kernelspec argv", kLauncher);
  SandboxCli cli(app);
  LauncherOnly extra;
  app.add_option("-f,--connection-file", extra.connection_file);
  app.add_option("--max-message-size", extra.max_message_size);
  auto split = split_command(app, args);
  std::vector<std::string> options;
  bool names_itself = false;
  for (size_t i = 0; i < split.options.size(); ++i) {
    const std::string& o = split.options[i];
    std::string value;
    if (o == "--kernelspec" && i + 1 < split.options.size()) value = split.options[i + 1];
    else if (o.rfind("--kernelspec=", 0) == 0) value = o.substr(13);
    else {
      options.push_back(o);
      continue;
    }
    if (value != resource_dir && value != resource_dir + "/") {
      options.push_back(o);  // another kernelspec's settings: the parser reads them
      continue;
    }
    names_itself = true;
    if (o == "--kernelspec") ++i;
  }
  if (names_itself && !has_metadata)
    return usage_error("kernel.json: argv passes --kernelspec {resource_dir} but there is no metadata." +
                       std::string(kKernelspecMetadataKey) + " section");
  options = normalize_short_equals(options);
  std::reverse(options.begin(), options.end());  // CLI11 takes them reversed
  try {
    app.parse(options);
  } catch (const CLI::Error& e) {
    return usage_error(std::string("kernel.json argv: ") + e.what());
  }
  // The launcher reads MNTDIRS from its environment, which Jupyter builds
  // from the kernelspec's env.
  std::string mntdirs;
  bool has_mntdirs = false;
  if (spec.contains("env") && spec["env"].is_object() && spec["env"].contains("MNTDIRS") &&
      spec["env"]["MNTDIRS"].is_string()) {
    mntdirs = spec["env"]["MNTDIRS"].get<std::string>();
    has_mntdirs = true;
  }
  IK_TRY(cli.finish(out.opts, has_mntdirs ? mntdirs.c_str() : nullptr));
  out.kernel_argv = split.command;
  return out;
}

std::string seconds_text(std::uint64_t s) {
  if (s >= 3600 && s % 3600 == 0) return std::to_string(s / 3600) + "h";
  if (s >= 60 && s % 60 == 0) return std::to_string(s / 60) + "m";
  return std::to_string(s) + "s";
}

std::string settings_summary(const Options& opts) {
  std::string s = std::string("network=") + (opts.net == NetMode::kShare ? "share" : "none");
  std::string mounts;
  for (const auto& m : opts.mounts) mounts += (mounts.empty() ? "" : " ") + m.text;
  s += "  mounts=[" + mounts + "]";
  std::string limits;
  auto put = [&](const char* k, const std::optional<std::uint64_t>& v, std::string (*fmt)(std::uint64_t)) {
    if (v) limits += (limits.empty() ? "" : " ") + std::string(k) + "=" + fmt(*v);
  };
  auto count = [](std::uint64_t v) { return std::to_string(v); };
  put("memory", opts.limits.memory_bytes, &format_size);
  put("cpu_time", opts.limits.cpu_seconds, &seconds_text);
  put("wall_time", opts.limits.wall_seconds, &seconds_text);
  put("nproc", opts.limits.nproc, +count);
  put("nofile", opts.limits.nofile, +count);
  put("fsize", opts.limits.fsize_bytes, &format_size);
  if (!limits.empty()) s += "  limits: " + limits;
  if (opts.pool > 0) s += "  pool=" + std::to_string(opts.pool);
  if (opts.pool > 0 && !opts.pool_preload.empty()) {
    s += " preload=";
    for (size_t i = 0; i < opts.pool_preload.size(); ++i) s += (i ? "," : "") + opts.pool_preload[i];
  }
  return s;
}

}  // namespace ik
