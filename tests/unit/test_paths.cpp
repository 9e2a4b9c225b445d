// Path helpers (common/paths): ~ expansion, lexical normalisation, depth,
// ancestry; and the planner's host_realpath, with the real host.
#include <doctest/doctest.h>
#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/paths.hpp"
#include "host/real_fs.hpp"
#include "plan/planner.hpp"

using ik::absolute_path;
using ik::expand_tilde;
using ik::normalize_path;
using ik::path_depth;
using ik::path_is_within;

namespace {

std::string expanded(const std::string& path, const std::string& home) {
  auto r = expand_tilde(path, home, *ik::real_host_fs());
  REQUIRE_MESSAGE(r.ok(), path << ": " << (r.ok() ? std::string() : r.error().describe()));
  return *r;
}

}  // namespace

TEST_CASE("expand_tilde: ~ and ~/x use the given home") {
  CHECK(expanded("~", "/home/alice") == "/home/alice");
  CHECK(expanded("~/", "/home/alice") == "/home/alice/");
  CHECK(expanded("~/x", "/home/alice") == "/home/alice/x");
  CHECK(expanded("~/x/y", "/u/91/alice") == "/u/91/alice/x/y");
}

TEST_CASE("expand_tilde: paths without a leading ~ are untouched") {
  CHECK(expanded("", "/h") == "");
  CHECK(expanded("/abs/~x", "/h") == "/abs/~x");
  CHECK(expanded("rel/~", "/h") == "rel/~");
  CHECK(expanded("a~b", "/h") == "a~b");
  CHECK(expanded(".", "/h") == ".");
}

TEST_CASE("expand_tilde: ~user looks the user up in passwd") {
  const passwd* pw = getpwnam("root");
  REQUIRE(pw != nullptr);
  const std::string root_home = pw->pw_dir;
  CHECK(expanded("~root", "/home/alice") == root_home);
  CHECK(expanded("~root/", "/home/alice") == root_home + "/");
  CHECK(expanded("~root/x/y", "/home/alice") == root_home + "/x/y");
}

TEST_CASE("expand_tilde: unknown user is a usage error naming it") {
  auto r = expand_tilde("~nosuchuser_ik_unit/x", "/home/alice", *ik::real_host_fs());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().exit_code == ik::kExitUsage);
  CHECK(r.error().describe().find("nosuchuser_ik_unit") != std::string::npos);
  CHECK(r.error().describe().find("~nosuchuser_ik_unit/x") != std::string::npos);
  CHECK_FALSE(expand_tilde("~nosuchuser_ik_unit", "/h", *ik::real_host_fs()).ok());
}

TEST_CASE("normalize_path") {
  CHECK(normalize_path("/") == "/");
  CHECK(normalize_path("") == "/");
  CHECK(normalize_path("//") == "/");
  CHECK(normalize_path("/a/b") == "/a/b");
  CHECK(normalize_path("//a///b//") == "/a/b");
  CHECK(normalize_path("/a/b/") == "/a/b");
  CHECK(normalize_path("/a/./b/.") == "/a/b");
  CHECK(normalize_path("/./.") == "/");
  CHECK(normalize_path("/a/b/../c") == "/a/c");
  CHECK(normalize_path("/a/b/../../c") == "/c");
  CHECK(normalize_path("/a/..") == "/");
  CHECK(normalize_path("/..") == "/");
  CHECK(normalize_path("/../../x") == "/x");
  CHECK(normalize_path("/a/../../b/./c/..") == "/b");
  CHECK(normalize_path("/a/...") == "/a/...");
  CHECK(normalize_path("/a/..b/.c") == "/a/..b/.c");
  CHECK(normalize_path("/a:b/c=d") == "/a:b/c=d");
}

TEST_CASE("absolute_path: relative paths resolve against cwd") {
  CHECK(absolute_path(".", "/home/alice/proj") == "/home/alice/proj");
  CHECK(absolute_path("./", "/home/alice/proj") == "/home/alice/proj");
  CHECK(absolute_path("data", "/home/alice/proj") == "/home/alice/proj/data");
  CHECK(absolute_path("../data", "/home/alice/proj") == "/home/alice/data");
  CHECK(absolute_path("../../../../x", "/home/alice") == "/x");
  CHECK(absolute_path("a//b/", "/c/") == "/c/a/b");
  CHECK(absolute_path("", "/c") == "/c");
  CHECK(absolute_path("x", "/") == "/x");
  // Absolute paths ignore cwd but are still normalised.
  CHECK(absolute_path("/etc/../usr//lib/", "/home/alice") == "/usr/lib");
  CHECK(absolute_path("/", "/home/alice") == "/");
}

TEST_CASE("host_realpath resolves symlinks and names the entry on error") {
  char tmpl[] = "/tmp/ik-unit-paths-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  // The temp dir itself may live under a symlinked /tmp.
  auto base = ik::host_realpath(tmpl, "t", *ik::real_host_fs());
  REQUIRE(base.ok());
  std::filesystem::create_directory(*base + "/real");
  std::filesystem::create_directory_symlink("real", *base + "/link");

  auto r = ik::host_realpath(std::string(tmpl) + "/link", "ro:link", *ik::real_host_fs());
  REQUIRE(r.ok());
  CHECK(*r == *base + "/real");

  auto missing = ik::host_realpath(std::string(tmpl) + "/nope", "ro:~/nope", *ik::real_host_fs());
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().exit_code == ik::kExitUsage);
  CHECK(missing.error().err == ENOENT);
  CHECK(missing.error().describe().find("ro:~/nope") != std::string::npos);
  CHECK(missing.error().describe().find("/nope") != std::string::npos);

  std::filesystem::remove_all(tmpl);
}

TEST_CASE("path_depth") {
  CHECK(path_depth("/") == 0);
  CHECK(path_depth("/a") == 1);
  CHECK(path_depth("/a/b") == 2);
  CHECK(path_depth("/a/b/") == 2);
  CHECK(path_depth("//a//b") == 2);
  CHECK(path_depth("/usr/lib/x86_64-linux-gnu") == 3);
}

TEST_CASE("path_is_within") {
  CHECK(path_is_within("/a", "/a"));
  CHECK(path_is_within("/a/b", "/a"));
  CHECK(path_is_within("/a/b/c", "/a"));
  CHECK(path_is_within("/a/b/c", "/a/b"));
  CHECK_FALSE(path_is_within("/ab", "/a"));
  CHECK_FALSE(path_is_within("/a", "/ab"));
  CHECK_FALSE(path_is_within("/a", "/a/b"));
  CHECK_FALSE(path_is_within("/b", "/a"));
  CHECK_FALSE(path_is_within("/a-b/c", "/a"));
  CHECK_FALSE(path_is_within("/a.b", "/a"));
  // Everything is within "/".
  CHECK(path_is_within("/", "/"));
  CHECK(path_is_within("/a", "/"));
  CHECK(path_is_within("/a/b", "/"));
  CHECK_FALSE(path_is_within("/", "/a"));
  CHECK_FALSE(path_is_within("/usr", "/usr/lib"));
  CHECK(path_is_within("/usr/share/zoneinfo/UTC", "/usr"));
}
