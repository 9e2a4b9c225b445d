#include "common/print_error.hpp"

#include <cstdio>

#include "common/log.hpp"

namespace ik {

int print_error(const Error& e) {
  std::fprintf(stderr, "%s: %s\n", log::program(), e.describe().c_str());
  return e.exit_code;
}

}  // namespace ik
