// The one place that prints an Error for the user: one line on stderr,
// "<program>: <step>: <detail> (<hint>)", and the exit status to use.
#pragma once
#include "common/error.hpp"

namespace ik {

int print_error(const Error& e);

}  // namespace ik
