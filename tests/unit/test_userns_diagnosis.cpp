// diagnose_namespace_failure: each host setting that blocks user namespaces
// is named with the command that fixes it.
#include <doctest/doctest.h>

#include <cerrno>
#include <map>
#include <string>

#include "apply/userns.hpp"

namespace {

ik::SysctlReader fake(std::map<std::string, std::string> values) {
  return [values](const std::string& name) {
    auto it = values.find(name);
    return it == values.end() ? std::string() : it->second;
  };
}

bool mentions(const ik::Error& e, const std::string& text) { return e.describe().find(text) != std::string::npos; }

}  // namespace

TEST_CASE("userns diagnosis: each blocking setting is named with its fix") {
  SUBCASE("Debian's kernel.unprivileged_userns_clone=0") {
    auto e = ik::diagnose_namespace_failure(EPERM, fake({{"kernel/unprivileged_userns_clone", "0"}}));
    CHECK(mentions(e, "sysctl -w kernel.unprivileged_userns_clone=1"));
    CHECK(e.exit_code == ik::kExitSetup);
  }
  SUBCASE("user.max_user_namespaces=0") {
    auto e = ik::diagnose_namespace_failure(ENOSPC, fake({{"user/max_user_namespaces", "0"}}));
    CHECK(mentions(e, "user.max_user_namespaces=15000"));
  }
  SUBCASE("Ubuntu's AppArmor restriction") {
    auto e = ik::diagnose_namespace_failure(EPERM, fake({{"kernel/apparmor_restrict_unprivileged_userns", "1"},
                                                         {"user/max_user_namespaces", "1000"}}));
    CHECK(mentions(e, "kernel.apparmor_restrict_unprivileged_userns=0"));
  }
  SUBCASE("a container's seccomp profile") {
    auto e = ik::diagnose_namespace_failure(EPERM, fake({{"user/max_user_namespaces", "1000"}}), true);
    CHECK(mentions(e, "seccomp"));
    CHECK(mentions(e, "unconfined"));
  }
  SUBCASE("namespace limit reached") {
    auto e = ik::diagnose_namespace_failure(ENOSPC, fake({{"user/max_user_namespaces", "3"}}));
    CHECK(mentions(e, "max_user_namespaces"));
  }
  SUBCASE("no user namespace support") {
    auto e = ik::diagnose_namespace_failure(EINVAL, fake({}));
    CHECK(mentions(e, "CONFIG_USER_NS"));
  }
  SUBCASE("unknown EPERM still points to the doctor") {
    auto e = ik::diagnose_namespace_failure(EPERM, fake({{"user/max_user_namespaces", "1000"}}));
    CHECK(mentions(e, "isolated-kernel doctor"));
  }
}
