// Network namespace: a new one has only `lo`, and it starts DOWN, so a
// kernel binding 127.0.0.1 would fail until we bring it up.
#pragma once
#include <string>

#include "common/error.hpp"

namespace ik {

Status bring_up_loopback();
Status set_hostname(const std::string& name);

}  // namespace ik
