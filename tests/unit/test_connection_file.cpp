// Connection-file parsing, validation and the kernel's private copy.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "relay/connection_file.hpp"

using ik::relay::ConnectionInfo;
using ik::relay::kernel_side_connection;
using ik::relay::parse_connection_json;
using ik::relay::read_connection_file;
using nlohmann::json;

namespace {

json valid_json() {
  return json{{"shell_port", 50001},     {"iopub_port", 50002}, {"stdin_port", 50003},
              {"control_port", 50004},   {"hb_port", 50005},    {"ip", "127.0.0.1"},
              {"key", "a0436f6c-1916"},  {"transport", "tcp"},  {"signature_scheme", "hmac-sha256"},
              {"kernel_name", "python3"}};
}

// The error text for `j` (which must fail to parse).
std::string error_for(const json& j) {
  auto r = parse_connection_json(j.dump(), "/run/k.json");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().exit_code == ik::kExitUsage);
  return r.error().describe();
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/ik-conn-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  std::string write(const std::string& name, const std::string& text) const {
    std::string p = path + "/" + name;
    std::ofstream(p) << text;
    return p;
  }
};

}  // namespace

TEST_SUITE_BEGIN("connection");

TEST_CASE("connection: a valid file parses with every field") {
  auto r = parse_connection_json(valid_json().dump(2), "k.json");
  REQUIRE(r.ok());
  const ConnectionInfo& c = *r;
  CHECK(c.transport == "tcp");
  CHECK(c.ip == "127.0.0.1");
  CHECK(c.shell_port == 50001);
  CHECK(c.iopub_port == 50002);
  CHECK(c.stdin_port == 50003);
  CHECK(c.control_port == 50004);
  CHECK(c.hb_port == 50005);
  CHECK(c.key == "a0436f6c-1916");
  CHECK(c.signature_scheme == "hmac-sha256");
  CHECK(c.raw["kernel_name"] == "python3");
}

TEST_CASE("connection: optional fields") {
  SUBCASE("an empty key is allowed") {
    auto j = valid_json();
    j["key"] = "";
    auto r = parse_connection_json(j.dump(), "k");
    REQUIRE(r.ok());
    CHECK(r->key.empty());
  }
  SUBCASE("a missing transport means tcp, as in jupyter_client") {
    auto j = valid_json();
    j.erase("transport");
    auto r = parse_connection_json(j.dump(), "k");
    REQUIRE(r.ok());
    CHECK(r->transport == "tcp");
  }
  SUBCASE("a missing signature_scheme is empty") {
    auto j = valid_json();
    j.erase("signature_scheme");
    auto r = parse_connection_json(j.dump(), "k");
    REQUIRE(r.ok());
    CHECK(r->signature_scheme.empty());
  }
  SUBCASE("ipc transport") {
    auto j = valid_json();
    j["transport"] = "ipc";
    j["ip"] = "/run/user/1000/kernel-x";
    auto r = parse_connection_json(j.dump(), "k");
    REQUIRE(r.ok());
    CHECK(r->transport == "ipc");
  }
}

TEST_CASE("connection: each invalid case has its own message") {
  SUBCASE("bad JSON names the position") {
    auto r = parse_connection_json("{\"shell_port\": 1,\n  oops}", "/run/k.json");
    REQUIRE_FALSE(r.ok());
    const std::string msg = r.error().describe();
    CHECK(r.error().exit_code == ik::kExitUsage);
    CHECK(contains(msg, "/run/k.json"));
    CHECK(contains(msg, "not valid JSON"));
    CHECK(contains(msg, "line 2, column 3"));
    CHECK_FALSE(contains(msg, "[json.exception"));
  }
  SUBCASE("not an object") { CHECK(contains(error_for(json::array({1, 2})), "must be a JSON object")); }
  SUBCASE("each missing port is named") {
    for (const char* key : {"shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"}) {
      CAPTURE(key);
      auto j = valid_json();
      j.erase(key);
      CHECK(contains(error_for(j), std::string("\"") + key + "\" is missing"));
    }
  }
  SUBCASE("a non-integer port is named") {
    auto j = valid_json();
    j["hb_port"] = "50005";
    CHECK(contains(error_for(j), "\"hb_port\" must be an integer, got \"50005\""));
    j["hb_port"] = 50005.5;
    CHECK(contains(error_for(j), "\"hb_port\" must be an integer"));
    j["hb_port"] = nullptr;
    CHECK(contains(error_for(j), "\"hb_port\" must be an integer, got null"));
  }
  SUBCASE("ports out of range") {
    auto j = valid_json();
    j["iopub_port"] = 0;
    CHECK(contains(error_for(j), "\"iopub_port\" is 0, outside 1-65535"));
    j["iopub_port"] = 65536;
    CHECK(contains(error_for(j), "\"iopub_port\" is 65536, outside 1-65535"));
    j["iopub_port"] = -1;
    CHECK(contains(error_for(j), "\"iopub_port\" is -1"));
    j["iopub_port"] = 18446744073709551615ull;
    CHECK(contains(error_for(j), "\"iopub_port\" is 18446744073709551615"));
  }
  SUBCASE("the same port twice") {
    auto j = valid_json();
    j["hb_port"] = 50001;
    CHECK(contains(error_for(j), "shell_port and hb_port are both 50001"));
  }
  SUBCASE("missing key") {
    auto j = valid_json();
    j.erase("key");
    CHECK(contains(error_for(j), "\"key\" is missing"));
  }
  SUBCASE("non-string key") {
    auto j = valid_json();
    j["key"] = 42;
    CHECK(contains(error_for(j), "\"key\" must be a string"));
  }
  SUBCASE("unknown transport") {
    auto j = valid_json();
    j["transport"] = "udp";
    const std::string msg = error_for(j);
    CHECK(contains(msg, "transport \"udp\" is not supported"));
    CHECK(contains(msg, "\"tcp\" or \"ipc\""));
  }
  SUBCASE("missing ip") {
    auto j = valid_json();
    j.erase("ip");
    CHECK(contains(error_for(j), "\"ip\" is missing"));
  }
  SUBCASE("empty ip") {
    auto j = valid_json();
    j["ip"] = "";
    CHECK(contains(error_for(j), "\"ip\" is empty"));
  }
}

TEST_CASE("connection: reading files") {
  TempDir dir;
  SUBCASE("a valid file") {
    auto r = read_connection_file(dir.write("k.json", valid_json().dump()));
    REQUIRE(r.ok());
    CHECK(r->shell_port == 50001);
  }
  SUBCASE("a missing file") {
    auto r = read_connection_file(dir.path + "/nope.json");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().exit_code == ik::kExitUsage);
    CHECK(r.error().err == ENOENT);
    CHECK(contains(r.error().describe(), dir.path + "/nope.json"));
    CHECK(contains(r.error().describe(), "No such file"));
  }
  SUBCASE("an unreadable file") {
    if (geteuid() == 0) return;  // root reads anything
    const std::string p = dir.write("k.json", valid_json().dump());
    REQUIRE(chmod(p.c_str(), 0) == 0);
    auto r = read_connection_file(p);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().err == EACCES);
    CHECK(r.error().exit_code == ik::kExitUsage);
  }
  SUBCASE("a directory") {
    auto r = read_connection_file(dir.path);
    REQUIRE_FALSE(r.ok());
    CHECK(contains(r.error().describe(), "not a regular file"));
  }
  SUBCASE("errors in the file name the path") {
    auto r = read_connection_file(dir.write("bad.json", "{"));
    REQUIRE_FALSE(r.ok());
    CHECK(contains(r.error().describe(), dir.path + "/bad.json"));
  }
}

TEST_CASE("connection: endpoint formatting matches jupyter_client") {
  ConnectionInfo c;
  c.transport = "tcp";
  c.ip = "127.0.0.1";
  CHECK(c.endpoint(5555) == "tcp://127.0.0.1:5555");
  c.transport = "ipc";
  c.ip = "/run/dir/kernel-abc";
  CHECK(c.endpoint(3) == "ipc:///run/dir/kernel-abc-3");
  c.ip = "kernel-abc-ipc";  // jupyter's default relative ipc name
  CHECK(c.endpoint(1) == "ipc://kernel-abc-ipc-1");
}

TEST_CASE("connection: kernel_side_connection") {
  auto host = parse_connection_json(valid_json().dump(), "k");
  REQUIRE(host.ok());
  json k = kernel_side_connection(*host, "/run/dir/k");
  CHECK(k["transport"] == "ipc");
  CHECK(k["ip"] == "/run/dir/k");
  CHECK(k["shell_port"] == 1);
  CHECK(k["iopub_port"] == 2);
  CHECK(k["stdin_port"] == 3);
  CHECK(k["control_port"] == 4);
  CHECK(k["hb_port"] == 5);
  CHECK(k["key"] == "a0436f6c-1916");
  CHECK(k["signature_scheme"] == "hmac-sha256");
  CHECK(k["kernel_name"] == "python3");
  CHECK(k.size() == valid_json().size());  // nothing added, nothing lost

  // The private copy is itself a valid connection file pointing at the ipc
  // socket files the relay connects to.
  auto back = parse_connection_json(k.dump(), "kernel copy");
  REQUIRE(back.ok());
  CHECK(back->endpoint(back->shell_port) == "ipc:///run/dir/k-1");
  CHECK(back->endpoint(back->hb_port) == "ipc:///run/dir/k-5");
  // The host's copy is untouched.
  CHECK(host->raw["transport"] == "tcp");
  CHECK(host->raw["shell_port"] == 50001);
}

TEST_SUITE_END();

// Found by tests/fuzz/fuzz_connection_file: a number too large for a double
// made nlohmann throw out_of_range (not parse_error), which escaped.
TEST_CASE("connection: a number overflow is a clean error (fuzz regression)") {
  auto r = ik::relay::parse_connection_json(R"({"shell_port": 1E99999, "iopub_port": 2})", "f.json");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().exit_code == ik::kExitUsage);
  CHECK(r.error().describe().find("number overflow") != std::string::npos);
}
