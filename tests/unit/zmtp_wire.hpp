// Wire bytes shared by the relay's unit tests.
#pragma once
#include <string>

// A ZMTP 3.0 greeting with the NULL mechanism, as libzmq sends it.
inline std::string greeting() {
  std::string g(64, '\0');
  g[0] = '\xff';
  g[9] = '\x7f';
  g[10] = 3;
  g.replace(12, 4, "NULL");
  return g;
}
