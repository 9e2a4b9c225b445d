// A run's own pool (launcher/batch/run_pool.hpp, launcher/pool/run_hold.hpp):
// the launcher argv the run's workers will run (it must equal what
// share/run/ik_run_notebook.py's with_options() builds, or the pool would
// be of another argv than the claims), and the hold request's checks.
#include <doctest/doctest.h>

#include "batch/run_pool.hpp"
#include "pool/run_hold.hpp"

using ik::batch::argv_with_options;
using V = std::vector<std::string>;

TEST_CASE("run pool: the workers' launcher argv, as with_options() builds it") {
  const V spec{"/usr/bin/isolated-kernel-launcher", "--kernelspec", "/k", "--", "python3", "-f", "{connection_file}"};
  // No options: the kernelspec's argv unchanged (the worker does not touch it).
  CHECK(argv_with_options(spec, {}, {}) == spec);
  // Options go after the kernelspec's own, before `--`; `--` and what follows stay.
  CHECK(argv_with_options(spec, {"--memory", "1G"}, {"--memory"}) == V{"/usr/bin/isolated-kernel-launcher",
                                                                       "--kernelspec", "/k", "--memory", "1G", "--",
                                                                       "python3", "-f", "{connection_file}"});
  // An overridden option the kernelspec gives (both spellings) is dropped there, only before `--`.
  const V own{"/l", "--memory", "2G", "--nproc=50", "--kernelspec", "/k", "--", "py", "--memory", "x"};
  CHECK(argv_with_options(own, {"--memory", "1G", "--nproc", "9"}, {"--memory", "--nproc"}) ==
        V{"/l", "--kernelspec", "/k", "--memory", "1G", "--nproc", "9", "--", "py", "--memory", "x"});
  // Options that override nothing (--kernel-option) are added, nothing dropped.
  CHECK(argv_with_options(V{"/l", "--mnt=ro:/a"}, {"--mnt=ro:/b"}, {}) == V{"/l", "--mnt=ro:/a", "--mnt=ro:/b"});
}

TEST_CASE("run pool: a hold names spec, env, size and the run") {
  nlohmann::json ok{
      {"op", "hold"}, {"spec", {"--kernelspec", "/k"}}, {"env", {{"PATH", "/usr/bin"}}}, {"size", 2}, {"run", "12-ab"}};
  auto h = ik::pool::parse_hold(ok);
  REQUIRE(h);
  CHECK(h->size == 2);
  CHECK(h->token == "12-ab");
  CHECK(h->env.at("PATH") == "/usr/bin");
  for (const char* drop : {"spec", "env", "size", "run"}) {
    auto bad = ok;
    bad.erase(drop);
    CHECK_FALSE(ik::pool::parse_hold(bad));
  }
  auto negative = ok;
  negative["size"] = -1;
  CHECK_FALSE(ik::pool::parse_hold(negative));
  auto no_token = ok;
  no_token["run"] = "";
  CHECK_FALSE(ik::pool::parse_hold(no_token));
  // A run's pool is never the kernelspec's pool of the same argv.
  CHECK(ik::pool::run_pool_id("[\"a\"]", "1-x") != "[\"a\"]");
  CHECK(ik::pool::run_pool_id("[\"a\"]", "1-x") != ik::pool::run_pool_id("[\"a\"]", "2-y"));
}
