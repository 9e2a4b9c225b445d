// The Jupyter connection file: read and validate the host's copy, and derive
// the private copy the sandboxed kernel gets (ipc sockets in a runtime dir).
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.hpp"

namespace ik::relay {

// Kernel-side "ports": suffixes of the ipc socket files "<ipc_base>-N".
// Shared by kernel_side_connection() and the relay so both sides agree.
struct KernelIpcPort {
  static constexpr int kShell = 1;
  static constexpr int kIopub = 2;
  static constexpr int kStdin = 3;
  static constexpr int kControl = 4;
  static constexpr int kHb = 5;
};

struct ConnectionInfo {
  std::string transport;  // "tcp" or "ipc"
  std::string ip;         // tcp: address; ipc: path prefix of the socket files
  int shell_port = 0;
  int iopub_port = 0;
  int stdin_port = 0;
  int control_port = 0;
  int hb_port = 0;
  std::string key;               // may be empty (jupyter allows no signing)
  std::string signature_scheme;  // empty when the file has none
  nlohmann::json raw;            // the whole object, unknown fields included

  // The ZeroMQ address of one port, formatted as jupyter_client's _make_url:
  // "tcp://ip:port" or "ipc://ip-port".
  std::string endpoint(int port) const;
};

// Parses and validates connection-file text; `where` names the source in
// error messages (usually the path). Errors have exit_code kExitUsage.
Result<ConnectionInfo> parse_connection_json(const std::string& text, const std::string& where);

// Reads `path` (a small regular file) and parses it as above.
Result<ConnectionInfo> read_connection_file(const std::string& path);

// The kernel's private copy: `host.raw` with transport "ipc", ip = ipc_base
// and ports shell=1, iopub=2, stdin=3, control=4, hb=5. Everything else
// (key, signature_scheme, kernel_name, ...) is kept as is.
nlohmann::json kernel_side_connection(const ConnectionInfo& host, const std::string& ipc_base);

}  // namespace ik::relay
