// Reading an installed kernelspec's kernel.json for `isolated-kernel list`,
// `show`, `remove` and `doctor`: any content (it is user data) gives either
// the settings or one error, never an exception. Pure: the only file it may
// read is a --config named in the kernelspec's argv. Fuzzed by
// tests/fuzz/fuzz_kernelspec.cpp.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "parse/options.hpp"

namespace ik {

// Whether kernel.json `spec` starts isolated-kernel-launcher (argv[0]).
bool is_isolated_spec(const nlohmann::json& spec);

// The sandbox settings an isolated kernelspec gives its kernel, as the
// launcher computes them: metadata.isolated_kernel (what `install` writes),
// then the launcher flags in argv before "--" (hand-written kernelspecs,
// docs/nbgrader.md). `kernel_argv` is what follows them. MNTDIRS of the
// kernelspec's env applies when neither gives mounts. `connection_file`
// replaces {connection_file} everywhere in argv[1..], as jupyter_client does
// at launch: inside launcher flags (isolate.sh kernelspecs mounted it:
// --mnt "{connection_file} .") and in the kernel argv alike; the default
// leaves the placeholder as it is.
struct KernelspecSettings {
  Options opts;
  std::vector<std::string> kernel_argv;
};
Result<KernelspecSettings> kernelspec_settings(const nlohmann::json& spec, const std::string& resource_dir,
                                               const std::string& connection_file = "{connection_file}");

// One line for `list`: network=none  mounts=[. ro:/x]  limits=memory=4G ...
std::string settings_summary(const Options& opts);

// 600 -> "10m" (the largest exact unit; sizes: format_size in parse/units).
std::string seconds_text(std::uint64_t seconds);

}  // namespace ik
