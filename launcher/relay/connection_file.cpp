#include "relay/connection_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <utility>

#include "common/fd.hpp"
#include "common/file_io.hpp"

namespace ik::relay {
namespace {

using nlohmann::json;

// Connection files are a few hundred bytes; the cap keeps a wrong path
// (a device, a huge log) from being slurped into memory.
constexpr size_t kMaxFileBytes = 1 << 20;

struct PortField {
  const char* name;
  int ConnectionInfo::*member;
};
constexpr std::array<PortField, 5> kPortFields{{
    {"shell_port", &ConnectionInfo::shell_port},
    {"iopub_port", &ConnectionInfo::iopub_port},
    {"stdin_port", &ConnectionInfo::stdin_port},
    {"control_port", &ConnectionInfo::control_port},
    {"hb_port", &ConnectionInfo::hb_port},
}};

Error bad_file(const std::string& where, std::string message, std::string hint = {}) {
  return Error{"connection file " + where, 0, std::move(message), std::move(hint), kExitUsage};
}

std::string quoted(const char* key) { return std::string("\"") + key + "\""; }

// A JSON value for an error message, cut short so a hostile file cannot
// flood the log.
std::string short_dump(const json& v) {
  std::string s = v.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// Optional string field: absent -> fallback; present but not a string -> error.
Result<std::string> string_field(const json& j, const char* key, const std::string& where,
                                 const std::string& fallback) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (!it->is_string()) return bad_file(where, quoted(key) + " must be a string");
  return it->get<std::string>();
}

Result<int> port_field(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) return bad_file(where, quoted(key) + " is missing");
  if (!it->is_number_integer()) return bad_file(where, quoted(key) + " must be an integer, got " + short_dump(*it));
  // Port 0 means "pick one" when jupyter writes a file; by the time a kernel
  // is launched the file holds the real port, so 0 here is an error.
  long long v = -1;  // stays out of range for unsigned values too big for long long
  if (!it->is_number_unsigned() || it->get<unsigned long long>() <= 65535) v = it->get<long long>();
  if (v < 1 || v > 65535) return bad_file(where, quoted(key) + " is " + short_dump(*it) + ", outside 1-65535");
  return static_cast<int>(v);
}

Status check_distinct_ports(const ConnectionInfo& info, const std::string& where) {
  for (size_t a = 0; a < kPortFields.size(); ++a)
    for (size_t b = a + 1; b < kPortFields.size(); ++b)
      if (info.*kPortFields[a].member == info.*kPortFields[b].member)
        return bad_file(where, std::string(kPortFields[a].name) + " and " + kPortFields[b].name + " are both " +
                                   std::to_string(info.*kPortFields[a].member));
  return ok();
}

Result<json> parse_object(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line L,
    // column C: ..."; drop the bracketed id, keep the position.
    std::string what = e.what();
    auto close = what.find("] ");
    if (close != std::string::npos) what = what.substr(close + 2);
    return bad_file(where, "not valid JSON: " + what);
  }
  if (!j.is_object()) return bad_file(where, "must be a JSON object, got " + std::string(j.type_name()));
  return j;
}

Status read_transport_and_ip(const json& j, const std::string& where, ConnectionInfo& info) {
  // jupyter_client defaults a missing transport to tcp; do the same.
  auto transport = string_field(j, "transport", where, "tcp");
  IK_TRY(transport);
  if (*transport != "tcp" && *transport != "ipc")
    return bad_file(where, "transport \"" + *transport + "\" is not supported", "use \"tcp\" or \"ipc\"");
  info.transport = *transport;

  if (!j.contains("ip")) return bad_file(where, "\"ip\" is missing");
  auto ip = string_field(j, "ip", where, "");
  IK_TRY(ip);
  if (ip->empty()) return bad_file(where, "\"ip\" is empty");
  info.ip = *ip;
  return ok();
}

Status read_key_fields(const json& j, const std::string& where, ConnectionInfo& info) {
  // An empty key is legal (unsigned messages) but the field must be there:
  // a file without it is almost certainly not a connection file.
  if (!j.contains("key")) return bad_file(where, "\"key\" is missing");
  auto key = string_field(j, "key", where, "");
  IK_TRY(key);
  info.key = *key;
  auto scheme = string_field(j, "signature_scheme", where, "");
  IK_TRY(scheme);
  info.signature_scheme = *scheme;
  return ok();
}

// The file, with the step and hint the user needs (kExitUsage: their input).
Result<std::string> read_connection_text(const std::string& path) {
  auto text = read_small_file(path, kMaxFileBytes);
  if (text) return text;
  Error e = text.error();
  e.step = "read connection file " + path;
  e.exit_code = kExitUsage;
  if (e.err == ENOENT) e.hint = "jupyter passes it as {connection_file} in the kernelspec argv";
  return e;
}

}  // namespace

std::string ConnectionInfo::endpoint(int port) const {
  if (transport == "tcp") return "tcp://" + ip + ":" + std::to_string(port);
  return transport + "://" + ip + "-" + std::to_string(port);
}

Result<ConnectionInfo> parse_connection_json(const std::string& text, const std::string& where) {
  auto j = parse_object(text, where);
  IK_TRY(j);
  ConnectionInfo info;
  IK_TRY(read_transport_and_ip(*j, where, info));
  for (const auto& f : kPortFields) {
    auto port = port_field(*j, f.name, where);
    IK_TRY(port);
    info.*f.member = *port;
  }
  IK_TRY(check_distinct_ports(info, where));
  IK_TRY(read_key_fields(*j, where, info));
  info.raw = std::move(*j);
  return info;
}

Result<ConnectionInfo> read_connection_file(const std::string& path) {
  auto text = read_connection_text(path);
  IK_TRY(text);
  return parse_connection_json(*text, path);
}

json kernel_side_connection(const ConnectionInfo& host, const std::string& ipc_base) {
  json j = host.raw.is_object() ? host.raw : json::object();
  j["transport"] = "ipc";
  j["ip"] = ipc_base;
  j["shell_port"] = KernelIpcPort::kShell;
  j["iopub_port"] = KernelIpcPort::kIopub;
  j["stdin_port"] = KernelIpcPort::kStdin;
  j["control_port"] = KernelIpcPort::kControl;
  j["hb_port"] = KernelIpcPort::kHb;
  // raw already holds these; restate them so a hand-built ConnectionInfo
  // (raw empty) still yields a usable file.
  j["key"] = host.key;
  if (!host.signature_scheme.empty()) j["signature_scheme"] = host.signature_scheme;
  return j;
}

}  // namespace ik::relay
