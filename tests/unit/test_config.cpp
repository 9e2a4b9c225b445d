// The JSON config (parse/config): every key, type errors, unknown keys.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "parse/config.hpp"

using ik::apply_config_json;
using ik::Options;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Applies `text` (parsed as JSON, like a config file) to a fresh Options.
ik::Status apply(const std::string& text, Options& opts) {
  return apply_config_json(json::parse(text), "cfg.json", opts);
}

Options applied(const std::string& text) {
  Options opts;
  auto s = apply(text, opts);
  REQUIRE_MESSAGE(s.ok(), text << ": " << (s.ok() ? std::string() : s.error().describe()));
  return opts;
}

// The message for a config that must be rejected.
std::string rejected(const std::string& text) {
  Options opts;
  auto s = apply(text, opts);
  REQUIRE_MESSAGE(!s.ok(), text << " should have been rejected");
  CHECK(s.error().exit_code == ik::kExitUsage);
  CHECK(s.error().describe().find("cfg.json") != std::string::npos);
  return s.error().describe();
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

}  // namespace

TEST_CASE("config: empty object changes nothing") {
  Options def;
  Options o = applied("{}");
  CHECK(o.mounts.empty());
  CHECK_FALSE(o.mounts_given);
  CHECK(o.net == def.net);
  CHECK(o.tmpfs_size == def.tmpfs_size);
  CHECK(o.hostname == def.hostname);
  CHECK(o.seccomp == def.seccomp);
  CHECK(o.build_dir == def.build_dir);
}

TEST_CASE("config: the top level must be an object") {
  for (const std::string text : {"[]", "\"x\"", "3", "null", "true"}) {
    CAPTURE(text);
    Options o;
    auto s = apply(text, o);
    REQUIRE_FALSE(s.ok());
    CHECK(s.error().exit_code == ik::kExitUsage);
    CHECK(contains(s.error().describe(), "cfg.json"));
  }
}

TEST_CASE("config: mounts as a string") {
  Options o = applied(R"({"mounts": "ro:/opt/conda . /data=none"})");
  CHECK(o.mounts_given);
  REQUIRE(o.mounts.size() == 3);
  CHECK(o.mounts[0].dest == "/opt/conda");
  CHECK(o.mounts[0].readonly);
  CHECK(o.mounts[1].dest == ".");
  CHECK(o.mounts[2].none);
}

TEST_CASE("config: mounts as an array of lists") {
  Options o = applied(R"({"mounts": ["ro:/opt/conda", "/a /b", "/x=/y"]})");
  CHECK(o.mounts_given);
  REQUIRE(o.mounts.size() == 4);
  CHECK(o.mounts[0].dest == "/opt/conda");
  CHECK(o.mounts[1].dest == "/a");
  CHECK(o.mounts[2].dest == "/b");
  CHECK(o.mounts[3].src == "/y");
}

TEST_CASE("config: an empty mount array still counts as given") {
  Options o = applied(R"({"mounts": []})");
  CHECK(o.mounts_given);
  CHECK(o.mounts.empty());
}

TEST_CASE("config: mounts append to what is already there") {
  Options o;
  o.mounts.push_back(ik::MountEntry{"/first", false, false, "/first", "", false});
  REQUIRE(apply(R"({"mounts": "/second"})", o).ok());
  REQUIRE(o.mounts.size() == 2);
  CHECK(o.mounts[0].dest == "/first");
  CHECK(o.mounts[1].dest == "/second");
}

TEST_CASE("config: mount errors") {
  CHECK(contains(rejected(R"({"mounts": 5})"), "'mounts'"));
  CHECK(contains(rejected(R"({"mounts": {"a": 1}})"), "'mounts'"));
  CHECK(contains(rejected(R"({"mounts": ["/a", 3]})"), "'mounts'"));
  // A grammar error names the file and the entry.
  std::string m = rejected(R"({"mounts": "/a ro:"})");
  CHECK(contains(m, "'ro:'"));
}

TEST_CASE("config: network values") {
  CHECK(applied(R"({"network": "none"})").net == ik::NetMode::kNone);
  CHECK(applied(R"({"network": "share"})").net == ik::NetMode::kShare);
  CHECK(contains(rejected(R"({"network": "host"})"), "'network'"));
  CHECK(contains(rejected(R"({"network": true})"), "'network'"));
  CHECK(contains(rejected(R"({"network": 0})"), "'network'"));
  CHECK(contains(rejected(R"({"network": ""})"), "'network'"));
}

TEST_CASE("config: booleans root and allow_userns") {
  Options o = applied(R"({"root": true, "allow_userns": true})");
  CHECK(o.as_root);
  CHECK(o.allow_userns);
  Options f = applied(R"({"root": false, "allow_userns": false})");
  CHECK_FALSE(f.as_root);
  CHECK_FALSE(f.allow_userns);
  CHECK(contains(rejected(R"({"root": "yes"})"), "'root'"));
  CHECK(contains(rejected(R"({"root": 1})"), "'root'"));
  CHECK(contains(rejected(R"({"allow_userns": "true"})"), "'allow_userns'"));
}

TEST_CASE("config: verbose") {
  CHECK(applied(R"({"verbose": 2})").verbose == 2);
  CHECK(contains(rejected(R"({"verbose": true})"), "'verbose'"));
  CHECK(contains(rejected(R"({"verbose": "2"})"), "'verbose'"));
  CHECK(contains(rejected(R"({"verbose": 1.5})"), "'verbose'"));
}

TEST_CASE("config: string keys build_dir, hostname, chdir") {
  Options o = applied(R"({"build_dir": "/var/tmp", "hostname": "box", "chdir": "~/work"})");
  CHECK(o.build_dir == "/var/tmp");
  CHECK(o.hostname == "box");
  CHECK(o.chdir == "~/work");
  CHECK(contains(rejected(R"({"build_dir": 1})"), "'build_dir'"));
  CHECK(contains(rejected(R"({"hostname": ["a"]})"), "'hostname'"));
  CHECK(contains(rejected(R"({"chdir": null})"), "'chdir'"));
}

TEST_CASE("config: seccomp") {
  CHECK(applied(R"({"seccomp": "off"})").seccomp == "off");
  CHECK(applied(R"({"seccomp": "default"})").seccomp == "default");
  CHECK(contains(rejected(R"({"seccomp": "strict"})"), "'seccomp'"));
  CHECK(contains(rejected(R"({"seccomp": false})"), "'seccomp'"));
}

TEST_CASE("config: tmpfs_size as number or string") {
  CHECK(applied(R"({"tmpfs_size": 1048576})").tmpfs_size == 1048576);
  CHECK(applied(R"({"tmpfs_size": "512M"})").tmpfs_size == 512ull << 20);
  CHECK(applied(R"({"tmpfs_size": "2G"})").tmpfs_size == 2ull << 30);
  CHECK(contains(rejected(R"({"tmpfs_size": -1})"), "'tmpfs_size'"));
  CHECK(contains(rejected(R"({"tmpfs_size": 1.5})"), "'tmpfs_size'"));
  CHECK(contains(rejected(R"({"tmpfs_size": true})"), "'tmpfs_size'"));
  CHECK(contains(rejected(R"({"tmpfs_size": "lots"})"), "'tmpfs_size'"));
  CHECK(contains(rejected(R"({"tmpfs_size": "5X"})"), "'tmpfs_size'"));
}

TEST_CASE("config: keep_env") {
  Options o = applied(R"({"keep_env": ["CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"]})");
  REQUIRE(o.keep_env.size() == 2);
  CHECK(o.keep_env[0] == "CUDA_VISIBLE_DEVICES");
  CHECK(o.keep_env[1] == "OMP_NUM_THREADS");
  CHECK(contains(rejected(R"({"keep_env": "HOME"})"), "'keep_env'"));
  CHECK(contains(rejected(R"({"keep_env": ["A", 1]})"), "'keep_env'"));
}

TEST_CASE("config: setenv") {
  Options o = applied(R"({"setenv": {"A": "1", "B": ""}})");
  REQUIRE(o.setenv.size() == 2);
  CHECK(o.setenv[0] == std::pair<std::string, std::string>{"A", "1"});
  CHECK(o.setenv[1] == std::pair<std::string, std::string>{"B", ""});
  CHECK(contains(rejected(R"({"setenv": ["A=1"]})"), "'setenv'"));
  CHECK(contains(rejected(R"({"setenv": {"N": 1}})"), "'setenv.N'"));
}

TEST_CASE("config: limits sub-keys") {
  Options o = applied(
      R"({"limits": {"memory": "2G", "cpu_time": "10m", "wall_time": 90, "nproc": 64, "nofile": "256",
                     "fsize": "1M"}})");
  REQUIRE(o.limits.memory_bytes);
  CHECK(*o.limits.memory_bytes == 2ull << 30);
  REQUIRE(o.limits.cpu_seconds);
  CHECK(*o.limits.cpu_seconds == 600);
  REQUIRE(o.limits.wall_seconds);
  CHECK(*o.limits.wall_seconds == 90);
  REQUIRE(o.limits.nproc);
  CHECK(*o.limits.nproc == 64);
  REQUIRE(o.limits.nofile);
  CHECK(*o.limits.nofile == 256);
  REQUIRE(o.limits.fsize_bytes);
  CHECK(*o.limits.fsize_bytes == 1ull << 20);

  Options p = applied(R"({"limits": {"memory": 1000, "wall_time": "1h"}})");
  CHECK(*p.limits.memory_bytes == 1000);
  CHECK(*p.limits.wall_seconds == 3600);
  CHECK_FALSE(p.limits.cpu_seconds);
  CHECK_FALSE(p.limits.nproc);

  Options e = applied(R"({"limits": {}})");
  CHECK_FALSE(e.limits.memory_bytes);
}

TEST_CASE("config: limits errors name the sub-key") {
  CHECK(contains(rejected(R"({"limits": 5})"), "'limits'"));
  CHECK(contains(rejected(R"({"limits": ["memory"]})"), "'limits'"));
  CHECK(contains(rejected(R"({"limits": {"memory": true}})"), "'limits.memory'"));
  CHECK(contains(rejected(R"({"limits": {"memory": "2Q"}})"), "'limits.memory'"));
  CHECK(contains(rejected(R"({"limits": {"cpu_time": "1d"}})"), "'limits.cpu_time'"));
  CHECK(contains(rejected(R"({"limits": {"wall_time": -5}})"), "'limits.wall_time'"));
  CHECK(contains(rejected(R"({"limits": {"nproc": "10K"}})"), "'limits.nproc'"));
  CHECK(contains(rejected(R"({"limits": {"nofile": 1.5}})"), "'limits.nofile'"));
  CHECK(contains(rejected(R"({"limits": {"fsize": null}})"), "'limits.fsize'"));
  std::string unknown = rejected(R"({"limits": {"stack": 1}})");
  CHECK(contains(unknown, "unknown key"));
  CHECK(contains(unknown, "'limits.stack'"));
}

TEST_CASE("config: unknown keys name the key and are usage errors") {
  Options o;
  auto s = apply(R"({"hostname": "x", "mount": "/a"})", o);
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().exit_code == ik::kExitUsage);
  CHECK(contains(s.error().describe(), "unknown key 'mount'"));
  CHECK(contains(s.error().describe(), "cfg.json"));
  CHECK(contains(rejected(R"({"net": "share"})"), "'net'"));
  CHECK(contains(rejected(R"({"Mounts": "/a"})"), "'Mounts'"));
}

TEST_CASE("config file: read, missing, invalid JSON") {
  char tmpl[] = "/tmp/ik-unit-config-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  const std::string good = dir + "/good.json";
  const std::string bad = dir + "/bad.json";
  const std::string unknown = dir + "/unknown.json";
  std::ofstream(good) << R"({"mounts": "ro:/opt", "network": "share", "limits": {"nproc": 10}})";
  std::ofstream(bad) << R"({"mounts": )";
  std::ofstream(unknown) << R"({"bogus": 1})";

  Options o;
  auto s = ik::apply_config_file(good, o);
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? std::string() : s.error().describe()));
  CHECK(o.net == ik::NetMode::kShare);
  REQUIRE(o.mounts.size() == 1);
  CHECK(o.mounts[0].readonly);
  CHECK(*o.limits.nproc == 10);

  Options o2;
  auto m = ik::apply_config_file(dir + "/missing.json", o2);
  REQUIRE_FALSE(m.ok());
  CHECK(m.error().exit_code == ik::kExitUsage);
  CHECK(contains(m.error().describe(), "missing.json"));

  auto b = ik::apply_config_file(bad, o2);
  REQUIRE_FALSE(b.ok());
  CHECK(b.error().exit_code == ik::kExitUsage);
  CHECK(contains(b.error().describe(), "bad.json"));
  CHECK(contains(b.error().describe(), "invalid JSON"));

  auto u = ik::apply_config_file(unknown, o2);
  REQUIRE_FALSE(u.ok());
  CHECK(u.error().exit_code == ik::kExitUsage);
  CHECK(contains(u.error().describe(), "unknown.json"));
  CHECK(contains(u.error().describe(), "'bogus'"));

  std::filesystem::remove_all(dir);
}

TEST_CASE("config: options_to_config_json round-trips through apply_config_json") {
  Options o = applied(
      R"({"mounts": ["ro:/opt/conda", "/a=/b", "/s=none"], "network": "share", "root": true,
          "tmpfs_size": "256M", "hostname": "grader", "seccomp": "off", "allow_userns": true,
          "setenv": {"A": "1"}, "keep_env": ["K"], "chdir": "/work",
          "limits": {"memory": "1G", "cpu_time": 60, "wall_time": 120, "nproc": 5, "nofile": 50, "fsize": 1024}})");
  json j = ik::options_to_config_json(o);
  CHECK(j["mounts"] == json::array({"ro:/opt/conda", "/a=/b", "/s=none"}));
  CHECK(j["network"] == "share");
  CHECK(j["limits"]["memory"] == 1ull << 30);

  Options back;
  auto s = apply_config_json(json::parse(j.dump()), "roundtrip", back);
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? std::string() : s.error().describe()));
  REQUIRE(back.mounts.size() == 3);
  CHECK(back.mounts[0].readonly);
  CHECK(back.mounts[1].src == "/b");
  CHECK(back.mounts[2].none);
  CHECK(back.net == ik::NetMode::kShare);
  CHECK(back.as_root);
  CHECK(back.tmpfs_size == 256ull << 20);
  CHECK(back.hostname == "grader");
  CHECK(back.seccomp == "off");
  CHECK(back.allow_userns);
  CHECK(back.setenv == o.setenv);
  CHECK(back.keep_env == o.keep_env);
  CHECK(back.chdir == "/work");
  CHECK(*back.limits.memory_bytes == *o.limits.memory_bytes);
  CHECK(*back.limits.cpu_seconds == 60);
  CHECK(*back.limits.wall_seconds == 120);
  CHECK(*back.limits.nproc == 5);
  CHECK(*back.limits.nofile == 50);
  CHECK(*back.limits.fsize_bytes == 1024);
}

TEST_CASE("config: options_to_config_json keeps build_dir") {
  // The header promises the inverse of apply_config_json; build_dir is a
  // config key, so a config written from Options must carry it.
  Options o = applied(R"({"build_dir": "/var/tmp"})");
  json j = ik::options_to_config_json(o);
  Options back;
  REQUIRE(apply_config_json(json::parse(j.dump()), "roundtrip", back).ok());
  CHECK(back.build_dir == "/var/tmp");
}

TEST_CASE("config: pool_preload lists module names, kept through options_to_config_json") {
  Options o = applied(R"({"pool": 2, "pool_preload": ["numpy", "matplotlib.pyplot", "_private2"]})");
  CHECK(o.pool_preload == std::vector<std::string>{"numpy", "matplotlib.pyplot", "_private2"});
  json j = ik::options_to_config_json(o);
  CHECK(j["pool_preload"] == json::array({"numpy", "matplotlib.pyplot", "_private2"}));
  Options back;
  REQUIRE(apply_config_json(json::parse(j.dump()), "roundtrip", back).ok());
  CHECK(back.pool_preload == o.pool_preload);
  CHECK_FALSE(ik::options_to_config_json(applied(R"({"pool": 1})")).contains("pool_preload"));
  for (const char* bad : {R"(["os; import x"])", R"(["a..b"])", R"([".a"])", R"(["a."])", R"(["1abc"])", R"([""])",
                          R"(["a b"])", R"(["a/b"])"}) {
    const std::string m = rejected(std::string(R"({"pool_preload": )") + bad + "}");
    CHECK(contains(m, "is not a Python module name"));
  }
  CHECK(contains(rejected(R"({"pool_preload": "numpy"})"), "an array of strings"));
  CHECK(ik::is_module_name("a.b2._c"));
  CHECK_FALSE(ik::is_module_name("a.2b"));
}

TEST_CASE("config: kernelspec metadata section") {
  char tmpl[] = "/tmp/ik-unit-kspec-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  fs::create_directory(dir + "/good");
  fs::create_directory(dir + "/nometa");
  fs::create_directory(dir + "/badkey");
  std::ofstream(dir + "/good/kernel.json") << R"({"argv": ["x"], "display_name": "X", "language": "python",
             "metadata": {"isolated_kernel": {"mounts": ["ro:/opt/conda"], "network": "none",
                                              "limits": {"memory": "2G"}}}})";
  std::ofstream(dir + "/nometa/kernel.json") << R"({"argv": ["x"], "metadata": {}})";
  std::ofstream(dir + "/badkey/kernel.json") << R"({"metadata": {"isolated_kernel": {"bogus": 1}}})";

  Options o;
  auto s = ik::apply_kernelspec_config(dir + "/good", o);
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? std::string() : s.error().describe()));
  REQUIRE(o.mounts.size() == 1);
  CHECK(o.mounts[0].readonly);
  CHECK(o.mounts_given);
  CHECK(*o.limits.memory_bytes == 2ull << 30);

  Options o2;
  auto n = ik::apply_kernelspec_config(dir + "/nometa", o2);
  REQUIRE_FALSE(n.ok());
  CHECK(n.error().exit_code == ik::kExitUsage);
  CHECK(contains(n.error().describe(), "metadata.isolated_kernel"));

  auto b = ik::apply_kernelspec_config(dir + "/badkey", o2);
  REQUIRE_FALSE(b.ok());
  CHECK(b.error().exit_code == ik::kExitUsage);
  CHECK(contains(b.error().describe(), "'bogus'"));
  CHECK(contains(b.error().describe(), "badkey/kernel.json"));

  auto m = ik::apply_kernelspec_config(dir + "/missing", o2);
  REQUIRE_FALSE(m.ok());
  CHECK(m.error().exit_code == ik::kExitUsage);

  fs::remove_all(dir);
}

// Same class of input as the connection-file fuzz crash: out_of_range from
// the JSON parser must become a usage error, not an escaped exception.
TEST_CASE("config: a number overflow in the file is a clean error") {
  char path[] = "/tmp/ik-unit-config-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  const std::string text = R"({"tmpfs_size": 1E99999})";
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
  ik::Options o;
  auto s = ik::apply_config_file(path, o);
  unlink(path);
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().exit_code == ik::kExitUsage);
}
