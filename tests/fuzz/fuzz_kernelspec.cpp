// libFuzzer target: an installed kernel.json as `isolated-kernel list`,
// `show` and `doctor` read it (user data: any content must give settings or
// one error, never an exception or a crash).
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernelspec/spec_read.hpp"
#include "parse/json_text.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto spec = ik::parse_json_text(text, "kernel.json");
  if (!spec) {
    if (spec.error().describe().empty()) __builtin_trap();
    return 0;
  }
  (void)ik::is_isolated_spec(*spec);
  auto settings = ik::kernelspec_settings(*spec, "/fuzz/kernels/x");
  if (settings) (void)ik::settings_summary(settings->opts);
  else if (settings.error().describe().empty()) __builtin_trap();
  return 0;
}
