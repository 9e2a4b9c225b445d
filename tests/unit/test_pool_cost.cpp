// The warm pool's cost control (docs/pool.md "Cost control"): when refills
// can run at a low priority, reading memory figures, and the pool a
// kernelspec asks for (pool/priority, pool/memory, pool/prescan).
#include <doctest/doctest.h>

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "pool/memory.hpp"
#include "pool/prescan.hpp"
#include "pool/priority.hpp"

using ik::pool::refill_priority_from;

TEST_CASE("refills are low priority only where autogroups reach us") {
  const std::string v1_root = "4:memory:/x\n2:cpu,cpuacct:/\n0::/\n";
  CHECK(refill_priority_from("1", v1_root, "").low);
  CHECK(refill_priority_from("1", v1_root, "").why.find("nice 19") != std::string::npos);
  auto off = refill_priority_from("0", v1_root, "");
  CHECK_FALSE(off.low);
  CHECK(off.why.find("sched_autogroup_enabled=0") != std::string::npos);
  CHECK_FALSE(refill_priority_from("", v1_root, "").low);  // no CONFIG_SCHED_AUTOGROUP
  auto v1_group = refill_priority_from("1", "2:cpu,cpuacct:/user.slice\n0::/\n", "");
  CHECK_FALSE(v1_group.low);
  CHECK(v1_group.why.find("/user.slice") != std::string::npos);
  // cgroup v2: below the root only matters when the root hands out cpu
  CHECK(refill_priority_from("1", "0::/\n", "cpu memory pids").low);
  CHECK(refill_priority_from("1", "0::/user.slice/u.service\n", "memory pids").low);
  CHECK(refill_priority_from("1", "0::/user.slice/u.service\n", "cpuset memory").low);
  auto v2_cpu = refill_priority_from("1", "0::/user.slice/u.service\n", "cpuset cpu io memory pids");
  CHECK_FALSE(v2_cpu.low);
  CHECK(v2_cpu.why.find("normal priority") != std::string::npos);
}

TEST_CASE("memory figures from smaps_rollup and status") {
  const std::string rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:   80000 kB\nPss:   41234 kB\n";
  CHECK(ik::pool::kib_field(rollup, "Pss:") == 41234);
  CHECK(ik::pool::kib_field(rollup, "Rss:") == 80000);
  CHECK(ik::pool::kib_field(rollup, "Pss_Anon:") == -1);
  CHECK(ik::pool::kib_field("", "Pss:") == -1);
  CHECK(ik::pool::process_memory_kib(getpid()) > 0);
  CHECK(ik::pool::memory_kib({getpid(), -1, 0}) > 0);
  CHECK(ik::pool::memory_kib({-1, 0}) == 0);             // skipped
  CHECK(ik::pool::process_memory_kib(0x7ffffff0) == 0);  // above pid_max: gone
}

TEST_CASE("the pool of an installed kernelspec, as jupyter_client will launch it") {
  ik::KernelspecInfo k;
  k.name = "p";
  k.resource_dir = "/k/p";
  k.spec = nlohmann::json::parse(R"({"argv": ["/usr/bin/isolated-kernel-launcher", "--kernelspec",
      "{resource_dir}", "--config={resource_dir}/none.json", "--", "python3", "-f", "{connection_file}"],
      "env": {"A": "spec", "N": 1}, "metadata": {"isolated_kernel": {"pool": 3}}})");
  k.spec["argv"].erase(3);  // no --config file to read
  const std::map<std::string, std::string> env{{"A", "daemon"}, {"B", "b"}, {"JPY_PARENT_PID", "1"}, {"PWD", "/x"}};
  std::string problem;
  auto p = ik::pool::pooled_spec(k, env, &problem);
  REQUIRE(p);
  CHECK(problem.empty());
  CHECK(p->size == 3);
  CHECK(p->spec == std::vector<std::string>{"--kernelspec", "/k/p", "--", "python3", "-f", "{connection_file}"});
  CHECK(p->env == std::map<std::string, std::string>{{"A", "spec"}, {"B", "b"}});

  k.spec["metadata"]["isolated_kernel"]["pool"] = 0;
  CHECK_FALSE(ik::pool::pooled_spec(k, env, &problem));
  k.spec["metadata"]["isolated_kernel"].erase("pool");
  CHECK_FALSE(ik::pool::pooled_spec(k, env, &problem));
  k.spec["argv"][0] = "/usr/bin/python3";  // not isolated
  k.spec["metadata"]["isolated_kernel"]["pool"] = 2;
  CHECK_FALSE(ik::pool::pooled_spec(k, env, &problem));
  k.spec["argv"][0] = "/usr/bin/isolated-kernel-launcher";
  k.spec["metadata"]["isolated_kernel"]["pool"] = "many";  // broken: said, not pooled
  CHECK_FALSE(ik::pool::pooled_spec(k, env, &problem));
  CHECK(problem.find("p: ") == 0);
}

TEST_CASE("a claim's failed raise to nice 0 is said, the rate limit is not (it is retried)") {
  using ik::pool::claim_raise_problem;
  CHECK(claim_raise_problem(0).empty());
  CHECK(claim_raise_problem(EAGAIN).empty());
  const std::string perm = claim_raise_problem(EPERM);
  CHECK(perm.find("stays at low CPU priority") != std::string::npos);
  CHECK(perm.find(std::strerror(EPERM)) != std::string::npos);
  CHECK(claim_raise_problem(EACCES).find(std::strerror(EACCES)) != std::string::npos);
}
