// Issue 14's pure parts: user-data JSON never throws, errors name
// file:line:column, limit floors, kernelspec settings from metadata and from
// launcher flags, limit explanations for RLIMIT_AS.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "apply/limits.hpp"
#include "kernelspec/install.hpp"
#include "kernelspec/spec_read.hpp"
#include "parse/cli.hpp"
#include "parse/json_text.hpp"
#include "parse/mount_list.hpp"

using nlohmann::json;

namespace {
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string settings_error(const json& spec) {
  auto r = ik::kernelspec_settings(spec, "/k/x");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().exit_code == ik::kExitUsage);
  return r.error().describe();
}

json launcher_spec(json flags, json metadata = nullptr) {
  json argv = json::array({"/usr/bin/isolated-kernel-launcher"});
  for (const auto& f : flags) argv.push_back(f);
  for (const char* a : {"--", "python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"}) argv.push_back(a);
  json spec{{"argv", argv}, {"display_name", "X"}};
  if (!metadata.is_null()) spec["metadata"] = metadata;
  return spec;
}
}  // namespace

TEST_CASE("json_text: syntax errors give file:line:column and the message only") {
  auto r = ik::parse_json_text("{\n  \"mounts\": [\".\",]\n}\n", "/c.json");
  REQUIRE_FALSE(r.ok());
  const std::string m = r.error().describe();
  CHECK(m.rfind("/c.json:2:18: invalid JSON: syntax error", 0) == 0);
  CHECK_FALSE(has(m, "json.exception"));
  CHECK_FALSE(has(m, "parse error at"));
  auto empty = ik::parse_json_text("", "/e.json");
  REQUIRE_FALSE(empty.ok());
  CHECK(has(empty.error().describe(), "/e.json:1:1: invalid JSON"));
  CHECK(ik::parse_json_text("[1]", "x").ok());
}

TEST_CASE("json_text: a directory is named as one") {
  auto r = ik::read_json_file("/tmp", "--config");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().describe() == "--config /tmp: is a directory (give the path of a JSON file)");
  CHECK(r.error().exit_code == ik::kExitUsage);
}

TEST_CASE("mount list: a flag-like prefix names the unknown word") {
  CHECK(ik::unknown_mount_flag("foo:bar:/x") == "foo");
  CHECK(ik::unknown_mount_flag("ro,rx:/x") == "rx");
  CHECK(ik::unknown_mount_flag("ro:/x") == "");
  CHECK(ik::unknown_mount_flag("/a:b") == "");
  CHECK(ik::unknown_mount_flag("Data1:x") == "");
  CHECK(ik::unknown_mount_flag(":x") == "");
  CHECK(ik::unknown_mount_flag("plain") == "");
}

TEST_CASE("limits: floors") {
  ik::Limits l;
  CHECK(ik::check_limit_floors(l).ok());
  l.memory_bytes = 10;
  CHECK(has(ik::check_limit_floors(l).error().describe(), "--memory must be at least 4M"));
  l.memory_bytes = 0;
  CHECK_FALSE(ik::check_limit_floors(l).ok());
  l.memory_bytes = ik::kMinMemoryBytes;
  CHECK(ik::check_limit_floors(l).ok());
  l.wall_seconds = 0;
  CHECK(has(ik::check_limit_floors(l).error().describe(), "--wall-time must be at least 1s"));
  l.wall_seconds = 1;
  l.cpu_seconds = 0;
  CHECK(has(ik::check_limit_floors(l).error().describe(), "--cpu-time"));
}

TEST_CASE("limits: RLIMIT_AS failures are explained") {
  ik::Plan plan;
  plan.limits.memory_bytes = 10ull << 20;
  plan.rlimits = plan.limits;
  CHECK(ik::explain_limit_exit(plan, 128 + SIGSEGV, {}) ==
        "died of SIGSEGV, probably at the --memory limit of 10M (RLIMIT_AS): try a larger --memory");
  CHECK(has(ik::explain_limit_exit(plan, 128 + SIGBUS, {}), "SIGBUS, probably at the --memory limit of 10M"));
  CHECK(has(ik::explain_limit_exit(plan, 127, {}), "probably the --memory limit of 10M (RLIMIT_AS)"));
  CHECK(ik::explain_limit_exit(plan, 1, {}) == "");
  // Through a cgroup (no RLIMIT_AS), a crash is not the limit.
  plan.rlimits.memory_bytes.reset();
  CHECK(ik::explain_limit_exit(plan, 128 + SIGSEGV, {}) == "");
  CHECK(ik::explain_limit_exit(plan, 127, {}) == "");
}

TEST_CASE("kernelspec settings: whatever kernel.json holds, an error and no exception") {
  CHECK(has(settings_error(launcher_spec(json::array({"--kernelspec", "{resource_dir}"}),
                                         {{"isolated_kernel", "mounts=."}})),
            "must be a JSON object"));
  CHECK(has(settings_error(json::array({1})), "no argv"));
  CHECK(has(settings_error({{"argv", "x"}}), "argv must be an array of strings"));
  CHECK(has(settings_error({{"argv", {1, 2}}}), "argv must be an array of strings"));
  CHECK(has(settings_error({{"argv", json::array()}}), "argv is empty"));
  CHECK(has(settings_error(launcher_spec(json::array(), 3)), "metadata must be an object"));
  CHECK(has(settings_error(launcher_spec(json::array({"--kernelspec", "{resource_dir}"}))),
            "no metadata.isolated_kernel"));
  CHECK(has(settings_error(launcher_spec(json::array({"--frobnicate"}))), "kernel.json argv"));
  CHECK(has(settings_error(launcher_spec(json::array({"--memory", "10"}))), "at least 4M"));
  CHECK_FALSE(ik::is_isolated_spec(json::array()));
  CHECK_FALSE(ik::is_isolated_spec({{"argv", {3}}}));
  CHECK(ik::is_isolated_spec(launcher_spec(json::array())));
}

TEST_CASE("kernelspec settings: {connection_file} is replaced in launcher flags and kernel argv alike") {
  auto r = ik::kernelspec_settings(launcher_spec(json::array({"--mnt", "{connection_file} ."})), "/k/x",
                                   "/run/user/1/kernel-1.json");
  REQUIRE(r.ok());
  REQUIRE(r->opts.mounts.size() == 2);
  CHECK(r->opts.mounts[0].text == "/run/user/1/kernel-1.json");
  CHECK(r->kernel_argv ==
        std::vector<std::string>{"python3", "-m", "ipykernel_launcher", "-f", "/run/user/1/kernel-1.json"});
}

TEST_CASE("kernelspec settings: metadata, then the launcher flags in argv") {
  auto r = ik::kernelspec_settings(
      launcher_spec(json::array({"--kernelspec", "{resource_dir}", "--share-net", "--memory", "4G"}),
                    {{"isolated_kernel", {{"mounts", {".", "ro:/opt"}}, {"limits", {{"memory", "1G"}}}}}}),
      "/k/x");
  REQUIRE(r.ok());
  CHECK(r->opts.net == ik::NetMode::kShare);
  CHECK(*r->opts.limits.memory_bytes == 4ull << 30);  // the flag wins, as in the launcher
  REQUIRE(r->opts.mounts.size() == 2);
  CHECK(r->opts.mounts[1].text == "ro:/opt");
  CHECK(r->kernel_argv == std::vector<std::string>{"python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"});
  CHECK(ik::settings_summary(r->opts) == "network=share  mounts=[. ro:/opt]  limits: memory=4G");

  // Hand-written (docs/nbgrader.md): flags only.
  auto h =
      ik::kernelspec_settings(launcher_spec(json::array({"--mnt", ". ro:/srv/data", "--cpu-time", "600"})), "/k/x");
  REQUIRE(h.ok());
  CHECK(ik::settings_summary(h->opts) == "network=none  mounts=[. ro:/srv/data]  limits: cpu_time=10m");

  // No mounts anywhere: MNTDIRS of the kernelspec's env, else ".".
  json spec = launcher_spec(json::array());
  CHECK(ik::settings_summary(ik::kernelspec_settings(spec, "/k/x")->opts) == "network=none  mounts=[.]");
  spec["env"] = {{"MNTDIRS", ". ro:/data"}};
  CHECK(ik::settings_summary(ik::kernelspec_settings(spec, "/k/x")->opts) == "network=none  mounts=[. ro:/data]");
}

TEST_CASE("units as written") {
  CHECK(ik::format_size(4294967296ull) == "4G");
  CHECK(ik::format_size(1536) == "1536");
  CHECK(ik::format_size(512ull << 20) == "512M");
  CHECK(ik::seconds_text(600) == "10m");
  CHECK(ik::seconds_text(7200) == "2h");
  CHECK(ik::seconds_text(90) == "90s");
}

TEST_CASE("install: the display name says which install, and odd wrapped specs do not throw") {
  ik::WrappedKernel w;
  w.spec = {{"display_name", "Python 3 (ipykernel)"}, {"language", 3}, {"env", 5}, {"metadata", "x"}};
  w.argv = {"/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"};
  ik::InstallRequest req;
  CHECK(ik::make_isolated_spec(req, w, "/l")["display_name"] == "Python 3 (isolated)");
  req.name = "course";
  json spec = ik::make_isolated_spec(req, w, "/l");
  CHECK(spec["display_name"] == "Python 3 (isolated: course)");
  CHECK(spec["language"] == "python");
  CHECK(spec["metadata"].contains("isolated_kernel"));
  req.display_name = "Mine";
  CHECK(ik::make_isolated_spec(req, w, "/l")["display_name"] == "Mine");
}
