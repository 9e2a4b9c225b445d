// The JSON config (--config FILE, and the kernelspec metadata): the same
// settings as the command line. Unknown keys and wrong types are errors.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.hpp"
#include "parse/options.hpp"

namespace ik {

// Applies the settings in `config` on top of `opts`. `where` names the source
// (file path) for messages.
Status apply_config_json(const nlohmann::json& config, const std::string& where, Options& opts);
Status apply_config_file(const std::string& path, Options& opts);

// A hostname the kernel accepts: 1-64 of [A-Za-z0-9.-].
Status validate_hostname(const std::string& name, const std::string& where);
// A dotted Python module name ("numpy", "matplotlib.pyplot"): what pool_preload lists.
bool is_module_name(const std::string& name);

// Settings from DIR/kernel.json, key metadata.isolated_kernel (the single
// place `isolated-kernel install` stores them).
Status apply_kernelspec_config(const std::string& dir, Options& opts);
inline constexpr const char* kKernelspecMetadataKey = "isolated_kernel";

// The limits given, as the config's "limits" object (bytes and seconds as
// numbers; absent ones left out). --print-plan shows the same object.
nlohmann::json limits_to_json(const Limits& limits);

// The settings of `opts` as config JSON (the inverse of apply_config_json).
nlohmann::json options_to_config_json(const Options& opts);

}  // namespace ik
