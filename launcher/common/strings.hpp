// Small string helpers shared by several layers.
#pragma once
#include <string>
#include <vector>

namespace ik {

// The non-empty pieces of `s` between `sep`s: "a,,b," -> {"a", "b"}.
std::vector<std::string> split_nonempty(const std::string& s, char sep);

}  // namespace ik
