#include "common/log.hpp"

#include <cstdarg>
#include <cstdio>
#include <unistd.h>

namespace ik::log {
namespace {
const char* g_program = "isolate";
int g_verbose = 0;

void vprint(const char* fmt, va_list ap) {
  char buf[4096];
  int n = std::snprintf(buf, sizeof buf, "%s[%d]: ", g_program, static_cast<int>(getpid()));
  if (n < 0) return;
  std::vsnprintf(buf + n, sizeof buf - static_cast<size_t>(n), fmt, ap);
  std::fprintf(stderr, "%s\n", buf);
}
}  // namespace

void set_program(const char* name) { g_program = name; }
const char* program() { return g_program; }
void set_verbose(int level) { g_verbose = level; }
int verbose() { return g_verbose; }

void step(const char* fmt, ...) {
  if (g_verbose < 1) return;
  va_list ap;
  va_start(ap, fmt);
  vprint(fmt, ap);
  va_end(ap);
}

void warn(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprint(fmt, ap);
  va_end(ap);
}

}  // namespace ik::log
