// `isolated-kernel pool start|stop|status`: the per-user warm pool daemon
// (docs/pool.md).
#pragma once
#include <string>

namespace ik::pool {

struct DaemonOptions {
  long idle_seconds = 30 * 60;                 // exit after this long without a claim
  int max_sandboxes = 16;                      // waiting sandboxes of this user, all kernelspecs
  unsigned long long max_memory = 1ull << 30;  // bytes, their total PSS (0: no cap)
  bool scan = true;                            // fill the installed pooled kernelspecs at start
  bool foreground = false;
  bool quiet = false;
};

int pool_start(const DaemonOptions& o);
int pool_stop();
int pool_status(bool json);

}  // namespace ik::pool
