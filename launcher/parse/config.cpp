#include "parse/config.hpp"

#include <cctype>
#include <fstream>
#include <sstream>

#include "parse/json_text.hpp"
#include "parse/mount_list.hpp"
#include "parse/units.hpp"

namespace ik {
namespace {
using nlohmann::json;

Error type_error(const std::string& where, const std::string& key, const char* expected) {
  return usage_error(where + ": key '" + key + "' must be " + expected);
}

// Accepts a number or a string with units for size/duration keys.
Result<std::uint64_t> unit_value(const json& v, const std::string& where, const std::string& key,
                                 Result<std::uint64_t> (*parse)(const std::string&, const std::string&)) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_string()) return parse(v.get<std::string>(), where + ": key '" + key + "'");
  return type_error(where, key, "a non-negative number or a string like \"512M\" / \"10m\"");
}

Status apply_limits(const json& limits, const std::string& where, Options& opts) {
  if (!limits.is_object()) return type_error(where, "limits", "an object");
  Limits& out = opts.limits;
  for (const auto& [key, v] : limits.items()) {
    const std::string k = "limits." + key;
    if (key == "mechanism") {
      auto via = v.is_string() ? parse_limits_via(v.get<std::string>()) : std::nullopt;
      if (!via) return type_error(where, k, "\"auto\", \"cgroup\" or \"rlimit\"");
      opts.limits_via = *via;
      continue;
    }
    std::optional<std::uint64_t>* slot = nullptr;
    auto parse = &parse_count;
    if (key == "memory") slot = &out.memory_bytes, parse = &parse_size;
    else if (key == "cpu_time") slot = &out.cpu_seconds, parse = &parse_seconds;
    else if (key == "wall_time") slot = &out.wall_seconds, parse = &parse_seconds;
    else if (key == "nproc") slot = &out.nproc;
    else if (key == "nofile") slot = &out.nofile;
    else if (key == "fsize") slot = &out.fsize_bytes, parse = &parse_size;
    else
      return usage_error(where + ": unknown key '" + k + "'",
                         "known: memory, cpu_time, wall_time, nproc, nofile, fsize, mechanism");
    auto r = unit_value(v, where, k, parse);
    if (!r) return r.error();
    *slot = *r;
  }
  return ok();
}

Status apply_mounts(const json& v, const std::string& where, Options& opts) {
  std::vector<std::string> lists;
  if (v.is_string()) lists.push_back(v.get<std::string>());
  else if (v.is_array()) {
    for (const auto& item : v) {
      if (!item.is_string()) return type_error(where, "mounts", "a string or an array of strings");
      lists.push_back(item.get<std::string>());
    }
  } else return type_error(where, "mounts", "a string or an array of strings");
  for (const auto& l : lists) {
    auto entries = parse_mount_list(l);
    if (!entries) {
      Error e = entries.error();
      e.step = where + ": " + e.step;
      return e;
    }
    for (auto& e : *entries) opts.mounts.push_back(std::move(e));
  }
  opts.mounts_given = true;
  return ok();
}

template <typename T>
Status get_as(const json& v, const std::string& where, const std::string& key, const char* what, T& out) {
  try {
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) return type_error(where, key, what);
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!v.is_string()) return type_error(where, key, what);
    } else {
      if (!v.is_number_integer()) return type_error(where, key, what);
    }
    out = v.get<T>();
  } catch (const json::exception&) {
    return type_error(where, key, what);
  }
  return ok();
}

}  // namespace

bool is_module_name(const std::string& name) {
  // Dotted Python identifiers (ASCII): what importlib.import_module takes.
  bool start = true;
  for (char c : name) {
    if (c == '.') {
      if (start) return false;
      start = true;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_' ||
               (!start && std::isdigit(static_cast<unsigned char>(c)))) {
      start = false;
    } else {
      return false;
    }
  }
  return !name.empty() && !start;
}

namespace {

Status apply_string_list(const json& v, const std::string& where, const std::string& key,
                         std::vector<std::string>& out) {
  if (!v.is_array()) return type_error(where, key, "an array of strings");
  for (const auto& item : v) {
    if (!item.is_string()) return type_error(where, key, "an array of strings");
    out.push_back(item.get<std::string>());
  }
  return ok();
}

}  // namespace

const char* limits_via_name(LimitsVia v) {
  switch (v) {
    case LimitsVia::kAuto: return "auto";
    case LimitsVia::kCgroup: return "cgroup";
    case LimitsVia::kRlimit: return "rlimit";
  }
  return "?";
}

std::optional<LimitsVia> parse_limits_via(const std::string& text) {
  if (text == "auto") return LimitsVia::kAuto;
  if (text == "cgroup") return LimitsVia::kCgroup;
  if (text == "rlimit") return LimitsVia::kRlimit;
  return std::nullopt;
}

Status validate_hostname(const std::string& name, const std::string& where) {
  bool good = !name.empty() && name.size() <= 64;
  for (char c : name) good = good && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.');
  if (!good)
    return usage_error(where + ": '" + name + "' is not a valid hostname", "use 1-64 letters, digits, '-' or '.'");
  return ok();
}

Status apply_config_json(const json& config, const std::string& where, Options& opts) {
  if (!config.is_object()) return usage_error(where + ": the config must be a JSON object");
  for (const auto& [key, v] : config.items()) {
    if (key == "mounts") IK_TRY(apply_mounts(v, where, opts));
    else if (key == "network") {
      std::string net;
      IK_TRY(get_as(v, where, key, "\"none\" or \"share\"", net));
      if (net == "none") opts.net = NetMode::kNone;
      else if (net == "share") opts.net = NetMode::kShare;
      else return type_error(where, key, "\"none\" or \"share\"");
    } else if (key == "root") IK_TRY(get_as(v, where, key, "true or false", opts.as_root));
    else if (key == "allow_userns") IK_TRY(get_as(v, where, key, "true or false", opts.allow_userns));
    else if (key == "verbose") IK_TRY(get_as(v, where, key, "an integer", opts.verbose));
    else if (key == "build_dir") IK_TRY(get_as(v, where, key, "a string", opts.build_dir));
    else if (key == "hostname") {
      IK_TRY(get_as(v, where, key, "a string", opts.hostname));
      IK_TRY(validate_hostname(opts.hostname, where + ": key 'hostname'"));
    } else if (key == "chdir") IK_TRY(get_as(v, where, key, "a string", opts.chdir));
    else if (key == "seccomp") {
      IK_TRY(get_as(v, where, key, "\"default\" or \"off\"", opts.seccomp));
      if (opts.seccomp != "default" && opts.seccomp != "off") return type_error(where, key, "\"default\" or \"off\"");
    } else if (key == "tmpfs_size") {
      auto r = unit_value(v, where, key, &parse_size);
      if (!r) return r.error();
      opts.tmpfs_size = *r;
    } else if (key == "keep_env") IK_TRY(apply_string_list(v, where, key, opts.keep_env));
    else if (key == "setenv") {
      if (!v.is_object()) return type_error(where, key, "an object of strings");
      for (const auto& [name, val] : v.items()) {
        if (!val.is_string()) return type_error(where, "setenv." + name, "a string");
        opts.setenv.emplace_back(name, val.get<std::string>());
      }
    } else if (key == "limits") IK_TRY(apply_limits(v, where, opts));
    else if (key == "pool") {
      if (!v.is_number_integer() || v.get<long long>() < 0 || v.get<long long>() > 64)
        return type_error(where, key, "a number of sandboxes from 0 to 64");
      opts.pool = v.get<int>();
    } else if (key == "pool_preload") {
      std::vector<std::string> modules;
      IK_TRY(apply_string_list(v, where, key, modules));
      for (const auto& m : modules)
        if (!is_module_name(m))
          return usage_error(where + ": pool_preload: '" + m + "' is not a Python module name",
                             "dotted identifiers, e.g. [\"numpy\", \"matplotlib.pyplot\"]");
      opts.pool_preload = std::move(modules);
    } else
      return usage_error(where + ": unknown key '" + key + "'",
                         "known: mounts, network, root, tmpfs_size, hostname, setenv, keep_env, "
                         "limits, chdir, seccomp, allow_userns, verbose, build_dir, pool, pool_preload");
  }
  return ok();
}

Status apply_config_file(const std::string& path, Options& opts) {
  auto config = read_json_file(path, "--config");
  if (!config) return config.error();
  return apply_config_json(*config, path, opts);
}

Status apply_kernelspec_config(const std::string& dir, Options& opts) {
  const std::string path = dir + "/kernel.json";
  auto spec = read_json_file(path, "--kernelspec");
  if (!spec) return spec.error();
  if (!spec->is_object() || !spec->contains("metadata") || !(*spec)["metadata"].contains(kKernelspecMetadataKey))
    return usage_error(path + ": no metadata." + kKernelspecMetadataKey + " section",
                       "reinstall it with 'isolated-kernel install --replace'");
  return apply_config_json((*spec)["metadata"][kKernelspecMetadataKey], path + " metadata." + kKernelspecMetadataKey,
                           opts);
}

json limits_to_json(const Limits& limits) {
  json j = json::object();
  const auto put = [&](const char* k, const std::optional<std::uint64_t>& v) {
    if (v) j[k] = *v;
  };
  put("memory", limits.memory_bytes);
  put("cpu_time", limits.cpu_seconds);
  put("wall_time", limits.wall_seconds);
  put("nproc", limits.nproc);
  put("nofile", limits.nofile);
  put("fsize", limits.fsize_bytes);
  return j;
}

json options_to_config_json(const Options& opts) {
  json j;
  json mounts = json::array();
  for (const auto& m : opts.mounts) mounts.push_back(m.text);
  j["mounts"] = mounts;
  j["network"] = opts.net == NetMode::kShare ? "share" : "none";
  j["root"] = opts.as_root;
  j["tmpfs_size"] = opts.tmpfs_size;
  j["hostname"] = opts.hostname;
  j["seccomp"] = opts.seccomp;
  j["allow_userns"] = opts.allow_userns;
  json env = json::object();
  for (const auto& [k, v] : opts.setenv) env[k] = v;
  j["setenv"] = env;
  j["keep_env"] = opts.keep_env;
  json limits = limits_to_json(opts.limits);
  if (opts.limits_via != LimitsVia::kAuto) limits["mechanism"] = limits_via_name(opts.limits_via);
  j["limits"] = limits;
  j["build_dir"] = opts.build_dir;
  if (!opts.chdir.empty()) j["chdir"] = opts.chdir;
  if (opts.pool > 0) j["pool"] = opts.pool;
  if (!opts.pool_preload.empty()) j["pool_preload"] = opts.pool_preload;
  return j;
}

}  // namespace ik
