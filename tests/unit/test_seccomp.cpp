// The seccomp filters compiled at build time (ik-seccomp-gen) against what
// libseccomp compiles from the same rules now (apply/seccomp*.cpp).
#include <doctest/doctest.h>

#include <cstring>

#include "apply/seccomp.hpp"

TEST_CASE("seccomp: the filters compiled at build time are what libseccomp compiles from the rules now") {
  std::vector<sock_filter> seen[2];
  for (bool userns : {false, true}) {
    CAPTURE(userns);
    const ik::SeccompPolicy policy{userns};
    auto now = ik::compile_seccomp_filter(policy);
    REQUIRE_MESSAGE(now.ok(), (now.ok() ? "" : now.error().describe()));
    REQUIRE(now->size() > ik::denied_syscalls().size());  // a rule per denied syscall at least
    seen[userns] = *now;
    auto built = ik::precompiled_seccomp_filter(policy);
    if (built.empty()) {
      MESSAGE("this build compiles the filter at start (no ik-seccomp-gen)");
      continue;
    }
    REQUIRE(built.size() == now->size());
    CHECK(std::memcmp(built.data(), now->data(), built.size() * sizeof(sock_filter)) == 0);
  }
  // --allow-userns drops the clone/unshare/clone3 rules: a shorter program.
  CHECK(seen[1].size() < seen[0].size());
}
