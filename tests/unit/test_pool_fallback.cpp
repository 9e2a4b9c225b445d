// Where the refill cgroup fallback looks (launcher/pool/cpu_cgroup.hpp):
// our cpu controller's directory from /proc/self/cgroup and mountinfo.
#include <doctest/doctest.h>

#include "pool/cpu_cgroup.hpp"

using ik::pool::locate_cpu_cgroup;

namespace {
const char* kHybridMounts = "35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n"
                            "36 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
                            "37 25 0:32 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n";
const char* kV2Mounts = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
}  // namespace

TEST_CASE("refill cgroup: v1 cpu hierarchy (hybrid host): the cpu line's path under its mount") {
  auto p = locate_cpu_cgroup("4:memory:/x\n3:cpu,cpuacct:/grading\n0::/user.slice\n", kHybridMounts);
  CHECK(p.version == 1);
  CHECK(p.dir == "/sys/fs/cgroup/cpu,cpuacct/grading");
  p = locate_cpu_cgroup("3:cpu,cpuacct:/\n0::/\n", kHybridMounts);
  CHECK(p.dir == "/sys/fs/cgroup/cpu,cpuacct");
  // cpuacct alone is not cpu
  CHECK(locate_cpu_cgroup("3:cpuacct:/a\n0::/b\n", kHybridMounts).version == 2);
}

TEST_CASE("refill cgroup: v2 only: the 0:: path under the cgroup2 mount") {
  auto p = locate_cpu_cgroup("0::/user.slice/user-1000.slice/user@1000.service/app.slice/ik.service\n", kV2Mounts);
  CHECK(p.version == 2);
  CHECK(p.dir == "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/ik.service");
  // A mount of a sub-tree (a container's view): the path relative to its root.
  p = locate_cpu_cgroup("0::/lxc/c1/app\n", "29 23 0:26 /lxc/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
  CHECK(p.dir == "/sys/fs/cgroup/app");
}

TEST_CASE("refill cgroup: nothing mounted, or no cgroup line: none, and why") {
  auto p = locate_cpu_cgroup("3:cpu:/a\n", "29 23 0:26 / /proc rw - proc proc rw\n");
  CHECK(p.version == 0);
  CHECK(p.why.find("cpu hierarchy is not mounted") != std::string::npos);
  CHECK(locate_cpu_cgroup("", kV2Mounts).version == 0);
}
