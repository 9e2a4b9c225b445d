// Command-line handling (parse/cli): SandboxCli with CLI11, -m=LIST
// rewriting, MNTDIRS and defaults, and the option/command split.
#include <doctest/doctest.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "parse/cli.hpp"

using ik::Options;
using ik::SandboxCli;
using Args = std::vector<std::string>;

namespace {

// An App with the sandbox options, as isolate builds it.
struct Cli {
  CLI::App app{"test", "isolate"};
  SandboxCli cli{app};
};

// Parses `options` (no command) and finishes into a fresh Options.
ik::Result<Options> run(const Args& options, const char* mntdirs = nullptr) {
  Cli c;
  int rc = ik::parse_options(c.app, options, "isolate");
  REQUIRE_MESSAGE(rc == -1, "CLI11 rejected the options");
  Options o;
  auto s = c.cli.finish(o, mntdirs);
  if (!s) return s.error();
  return o;
}

Options run_ok(const Args& options, const char* mntdirs = nullptr) {
  auto r = run(options, mntdirs);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? std::string() : r.error().describe()));
  return *r;
}

std::vector<std::string> dests(const Options& o) {
  std::vector<std::string> out;
  for (const auto& m : o.mounts) out.push_back(m.dest);
  return out;
}

// main() does: arguments(argc, argv) -> split_command -> normalize the
// options only. `args` starts with the program name like argv.
Args normalize(const Args& args) {
  std::vector<std::string> storage = args;
  std::vector<char*> argv;
  for (auto& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  return ik::normalize_short_equals(ik::arguments(static_cast<int>(storage.size()), argv.data()));
}

ik::SplitArgs split(const Args& args) {
  Cli c;
  return ik::split_command(c.app, args);
}

}  // namespace

TEST_CASE("cli: -m twice appends in order") {
  Options o = run_ok({"-m", "/a ro:/b", "-m", "/c"});
  CHECK(o.mounts_given);
  CHECK(dests(o) == Args{"/a", "/b", "/c"});
  CHECK_FALSE(o.mounts[0].readonly);
  CHECK(o.mounts[1].readonly);
}

TEST_CASE("cli: --mnt spellings") {
  CHECK(dests(run_ok({"--mnt", "/a /b"})) == Args{"/a", "/b"});
  CHECK(dests(run_ok({"--mnt=/a /b"})) == Args{"/a", "/b"});
  CHECK(dests(run_ok({"-m/a"})) == Args{"/a"});
  CHECK(dests(run_ok({"--mnt", "/a", "-m", "/b", "--mnt=/c"})) == Args{"/a", "/b", "/c"});
}

TEST_CASE("cli: a bad -m entry is a usage error naming --mnt") {
  auto r = run({"-m", "/a x="});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().exit_code == ik::kExitUsage);
  CHECK(r.error().describe().find("--mnt") != std::string::npos);
  CHECK(r.error().describe().find("'x='") != std::string::npos);
}

TEST_CASE("cli: MNTDIRS only without -m, default '.'") {
  SUBCASE("default") {
    Options o = run_ok({});
    CHECK(o.mounts_given);
    CHECK(dests(o) == Args{"."});
  }
  SUBCASE("MNTDIRS when no -m") {
    Options o = run_ok({}, "/m1 ro:/m2");
    CHECK(dests(o) == Args{"/m1", "/m2"});
    CHECK(o.mounts[1].readonly);
  }
  SUBCASE("-m wins over MNTDIRS") { CHECK(dests(run_ok({"-m", "/a"}, "/m1 /m2")) == Args{"/a"}); }
  SUBCASE("a bad MNTDIRS is named") {
    auto r = run({}, "ro:");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().exit_code == ik::kExitUsage);
    CHECK(r.error().describe().find("MNTDIRS") != std::string::npos);
  }
  SUBCASE("a bad MNTDIRS is ignored when -m is given") { CHECK(run({"-m", "/a"}, "ro:").ok()); }
}

TEST_CASE("cli: -m=LIST and -b=DIR via normalize_short_equals") {
  auto s = split({"-m=/a /b", "-b=/var/tmp", "-v", "--mnt=/c", "--", "python3", "-m=x"});
  CHECK(s.options == Args{"-m=/a /b", "-b=/var/tmp", "-v", "--mnt=/c"});
  CHECK(s.command == Args{"python3", "-m=x"});
  Args n = ik::normalize_short_equals(s.options);
  CHECK(n == Args{"-m", "/a /b", "-b", "/var/tmp", "-v", "--mnt=/c"});
  Options o = run_ok(n);
  CHECK(dests(o) == Args{"/a", "/b", "/c"});
  CHECK(o.build_dir == "/var/tmp");
  CHECK(o.verbose == 1);

  // Not rewritten: too short, long options, other letters, values with '='.
  CHECK(normalize({"isolate", "-m="}) == Args{"-m="});
  CHECK(normalize({"isolate", "-x=1"}) == Args{"-x=1"});
  CHECK(normalize({"isolate", "--mnt=/a"}) == Args{"--mnt=/a"});
  CHECK(normalize({"isolate", "-m", "/a=/b"}) == Args{"-m", "/a=/b"});
  CHECK(normalize({"isolate"}).empty());
}

TEST_CASE("cli: the command's own arguments are never rewritten") {
  // "isolate python3 -m=x": python3 starts the command, so "-m=x" is its
  // argument and must reach it untouched, as split_command promises.
  auto s = split({"-v", "python3", "-m=x", "-b=y"});
  CHECK(ik::normalize_short_equals(s.options) == Args{"-v"});
  CHECK(s.command == Args{"python3", "-m=x", "-b=y"});
}

TEST_CASE("cli: --no-net and --share-net") {
  CHECK(run_ok({}).net == ik::NetMode::kNone);
  CHECK(run_ok({"--no-net"}).net == ik::NetMode::kNone);
  CHECK(run_ok({"--share-net"}).net == ik::NetMode::kShare);
  auto r = run({"--no-net", "--share-net"});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().exit_code == ik::kExitUsage);
  CHECK(r.error().describe().find("--no-net") != std::string::npos);
  CHECK(r.error().describe().find("--share-net") != std::string::npos);
}

TEST_CASE("cli: switches and values") {
  Options o = run_ok({"--root",       "--allow-userns",
                      "--print-plan", "-vv",
                      "--hostname",   "box",
                      "--chdir",      "~/w",
                      "--seccomp",    "off",
                      "--tmpfs-size", "512M",
                      "--setenv",     "A=1",
                      "--setenv",     "B=x=y",
                      "--setenv",     "C=",
                      "--keep-env",   "DISPLAY",
                      "--keep-env",   "CUDA_VISIBLE_DEVICES"});
  CHECK(o.as_root);
  CHECK(o.allow_userns);
  CHECK(o.print_plan);
  CHECK(o.verbose == 2);
  CHECK(o.hostname == "box");
  CHECK(o.chdir == "~/w");
  CHECK(o.seccomp == "off");
  CHECK(o.tmpfs_size == 512ull << 20);
  using KV = std::pair<std::string, std::string>;
  CHECK(o.setenv == std::vector<KV>{{"A", "1"}, {"B", "x=y"}, {"C", ""}});
  CHECK(o.keep_env == Args{"DISPLAY", "CUDA_VISIBLE_DEVICES"});

  Options d = run_ok({});
  Options def;
  CHECK_FALSE(d.as_root);
  CHECK(d.verbose == 0);
  CHECK(d.build_dir == def.build_dir);
  CHECK(d.hostname == def.hostname);
  CHECK(d.seccomp == "default");
  CHECK(d.tmpfs_size == def.tmpfs_size);
}

TEST_CASE("cli: limits") {
  Options o = run_ok({"--memory", "2G", "--cpu-time", "10m", "--wall-time", "90", "--nproc", "64", "--nofile", "256",
                      "--fsize", "1G"});
  CHECK(*o.limits.memory_bytes == 2ull << 30);
  CHECK(*o.limits.cpu_seconds == 600);
  CHECK(*o.limits.wall_seconds == 90);
  CHECK(*o.limits.nproc == 64);
  CHECK(*o.limits.nofile == 256);
  CHECK(*o.limits.fsize_bytes == 1ull << 30);
  Options none = run_ok({});
  CHECK_FALSE(none.limits.memory_bytes);
  CHECK_FALSE(none.limits.wall_seconds);
  for (const Args& bad : {Args{"--memory", "2Q"}, Args{"--cpu-time", "1d"}, Args{"--nproc", "10K"},
                          Args{"--nofile", "-1"}, Args{"--fsize", "x"}, Args{"--wall-time", "1.5h"}}) {
    CAPTURE(bad[0]);
    auto r = run(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().exit_code == ik::kExitUsage);
    CHECK(r.error().describe().find(bad[0]) != std::string::npos);
  }
}

TEST_CASE("cli: value errors") {
  for (const Args& bad : {Args{"--seccomp", "strict"}, Args{"--tmpfs-size", "lots"}, Args{"--tmpfs-size", "1K"},
                          Args{"--setenv", "NOEQUALS"}, Args{"--setenv", "=v"}}) {
    CAPTURE(bad[1]);
    auto r = run(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().exit_code == ik::kExitUsage);
  }
  CHECK(run({"--tmpfs-size", "1M"}).ok());
}

TEST_CASE("cli: unknown options are usage errors") {
  Cli c;
  CHECK(ik::parse_options(c.app, {"--bogus"}, "isolate") == ik::kExitUsage);
  Cli c2;
  CHECK(ik::parse_options(c2.app, {"-m"}, "isolate") == ik::kExitUsage);
}

TEST_CASE("cli: --config is merged first, flags override it") {
  char tmpl[] = "/tmp/ik-unit-cli-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string cfg = std::string(tmpl) + "/c.json";
  std::ofstream(cfg) << R"({"mounts": "/cfg1 /cfg2", "network": "share", "hostname": "fromcfg", "root": true,
                           "limits": {"nproc": 5}})";
  SUBCASE("config alone; its mounts count as given, so MNTDIRS is not used") {
    Options o = run_ok({"--config", cfg}, "/from-mntdirs");
    CHECK(dests(o) == Args{"/cfg1", "/cfg2"});
    CHECK(o.net == ik::NetMode::kShare);
    CHECK(o.hostname == "fromcfg");
    CHECK(o.as_root);
    CHECK(*o.limits.nproc == 5);
  }
  SUBCASE("flags on top") {
    Options o = run_ok({"--config", cfg, "--no-net", "--hostname", "flag", "--nproc", "7", "-m", "/flag"});
    CHECK(dests(o) == Args{"/cfg1", "/cfg2", "/flag"});
    CHECK(o.net == ik::NetMode::kNone);
    CHECK(o.hostname == "flag");
    CHECK(*o.limits.nproc == 7);
  }
  SUBCASE("a missing config file") {
    auto r = run({"--config", std::string(tmpl) + "/missing.json"});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().exit_code == ik::kExitUsage);
  }
  std::filesystem::remove_all(tmpl);
}

TEST_CASE("cli: --kernelspec, then --config, then flags") {
  char tmpl[] = "/tmp/ik-unit-cli-ks-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  std::ofstream(dir + "/kernel.json")
      << R"({"argv": ["x"], "metadata": {"isolated_kernel": {"mounts": "/ks", "hostname": "ks", "root": true,
                                                            "limits": {"nproc": 3}}}})";
  std::ofstream(dir + "/c.json") << R"({"mounts": "/cfg", "hostname": "cfg"})";
  Options o = run_ok({"--kernelspec", dir}, "/from-mntdirs");
  CHECK(dests(o) == Args{"/ks"});
  CHECK(o.hostname == "ks");
  CHECK(o.as_root);
  Options o2 = run_ok({"--kernelspec", dir, "--config", dir + "/c.json", "-m", "/flag", "--nproc", "9"});
  CHECK(dests(o2) == Args{"/ks", "/cfg", "/flag"});
  CHECK(o2.hostname == "cfg");
  CHECK(*o2.limits.nproc == 9);
  std::filesystem::remove_all(dir);
}

TEST_CASE("split_command: options up to the first non-option") {
  auto s = split({"-v", "-m", "/a", "python3", "-m", "http.server"});
  CHECK(s.options == Args{"-v", "-m", "/a"});
  CHECK(s.command == Args{"python3", "-m", "http.server"});
}

TEST_CASE("split_command: stops at --, which is dropped once") {
  auto s = split({"-m", "/a", "--", "prog", "--", "-v"});
  CHECK(s.options == Args{"-m", "/a"});
  CHECK(s.command == Args{"prog", "--", "-v"});
  auto s2 = split({"--", "-v"});
  CHECK(s2.options.empty());
  CHECK(s2.command == Args{"-v"});
  auto s3 = split({"-v", "--"});
  CHECK(s3.options == Args{"-v"});
  CHECK(s3.command.empty());
}

TEST_CASE("split_command: options that take values skip their value") {
  SUBCASE("value looks like a command") {
    auto s = split({"-b", "/tmp", "ls", "-l"});
    CHECK(s.options == Args{"-b", "/tmp"});
    CHECK(s.command == Args{"ls", "-l"});
  }
  SUBCASE("long options with separate values") {
    auto s = split({"--setenv", "A=1", "--keep-env", "X", "--chdir", "/w", "--memory", "2G", "--mnt", "ro:/a",
                    "--hostname", "h", "prog"});
    CHECK(s.options == Args{"--setenv", "A=1", "--keep-env", "X", "--chdir", "/w", "--memory", "2G", "--mnt", "ro:/a",
                            "--hostname", "h"});
    CHECK(s.command == Args{"prog"});
  }
  SUBCASE("value that starts with a dash") {
    auto s = split({"--hostname", "-weird", "prog"});
    CHECK(s.options == Args{"--hostname", "-weird"});
    CHECK(s.command == Args{"prog"});
  }
  SUBCASE("attached values take nothing more") {
    auto s = split({"-m/a", "--mnt=/b", "prog", "arg"});
    CHECK(s.options == Args{"-m/a", "--mnt=/b"});
    CHECK(s.command == Args{"prog", "arg"});
  }
  SUBCASE("flags take no value") {
    auto s = split({"--root", "--no-net", "-v", "prog", "x"});
    CHECK(s.options == Args{"--root", "--no-net", "-v"});
    CHECK(s.command == Args{"prog", "x"});
    auto s2 = split({"-vv", "prog"});
    CHECK(s2.options == Args{"-vv"});
    CHECK(s2.command == Args{"prog"});
  }
  SUBCASE("no command") {
    auto s = split({"-m", "/a", "--print-plan"});
    CHECK(s.options == Args{"-m", "/a", "--print-plan"});
    CHECK(s.command.empty());
    auto e = split({});
    CHECK(e.options.empty());
    CHECK(e.command.empty());
  }
  SUBCASE("a lone dash is a command word") {
    auto s = split({"-v", "-", "x"});
    CHECK(s.command == Args{"-", "x"});
  }
  SUBCASE("an option value missing at the end") {
    auto s = split({"-v", "-m"});
    CHECK(s.options == Args{"-v", "-m"});
    CHECK(s.command.empty());
  }
  SUBCASE("split then parse: the value after -m is not the command") {
    Cli c;
    auto s = ik::split_command(c.app, {"-m", "/a /b", "python3", "-c", "print(1)"});
    REQUIRE(ik::parse_options(c.app, s.options, "isolate") == -1);
    Options o;
    REQUIRE(c.cli.finish(o, nullptr).ok());
    CHECK(dests(o) == Args{"/a", "/b"});
    CHECK(s.command == Args{"python3", "-c", "print(1)"});
  }
}

TEST_CASE("cli: --limits chooses how --memory and --nproc are enforced") {
  CHECK(run_ok({}).limits_via == ik::LimitsVia::kAuto);
  CHECK(run_ok({"--limits", "cgroup"}).limits_via == ik::LimitsVia::kCgroup);
  CHECK(run_ok({"--limits=rlimit"}).limits_via == ik::LimitsVia::kRlimit);
  CHECK(run_ok({"--limits", "auto"}).limits_via == ik::LimitsVia::kAuto);
  auto r = run({"--limits", "cgroups"});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().exit_code == ik::kExitUsage);
  CHECK(r.error().describe().find("--limits=auto, cgroup or rlimit") != std::string::npos);
}
