// libFuzzer target: the JSON config (--config, kernelspec metadata).
#include <cstddef>
#include <cstdint>
#include <string>

#include "parse/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;
  ik::Options opts;
  auto status = ik::apply_config_json(json, "fuzz", opts);
  if (status.ok()) {
    // What we accept we can write back, and read again to the same thing.
    ik::Options again;
    if (!ik::apply_config_json(ik::options_to_config_json(opts), "fuzz-roundtrip", again).ok()) __builtin_trap();
    if (ik::options_to_config_json(again) != ik::options_to_config_json(opts)) __builtin_trap();
  }
  return 0;
}
