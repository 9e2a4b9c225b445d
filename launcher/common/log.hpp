// Verbose step logging (-v). Goes to stderr, prefixed with the program name.
#pragma once
#include <string>

namespace ik::log {

void set_program(const char* name);
const char* program();
void set_verbose(int level);
int verbose();
// printf-style; printed only when verbose() >= 1.
void step(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// Always printed.
void warn(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace ik::log
