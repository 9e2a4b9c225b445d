// The warm pool's control socket (docs/pool.md): where it lives, and one
// JSON object per SOCK_SEQPACKET message, with descriptors over SCM_RIGHTS.
#pragma once
#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/fd.hpp"

namespace ik::pool {

// $XDG_RUNTIME_DIR/isolated-kernel when XDG_RUNTIME_DIR is set, else
// /tmp/isolated-kernel-<uid>.
std::string socket_dir();
inline std::string socket_path(const std::string& dir) { return dir + "/pool.sock"; }

// Creates the directory (0700) if missing; refuses one that is not ours,
// not a directory, or open to others (a clear error naming the fix).
Status ensure_private_dir(const std::string& dir);

struct Message {
  nlohmann::json body;
  std::vector<UniqueFd> fds;
};

Status send_message(int sock, const nlohmann::json& body, const std::vector<int>& fds = {});
// EOF is an Error with err = 0 and step "connection closed".
Result<Message> recv_message(int sock);

// A connected SOCK_SEQPACKET socket to the daemon, or an error.
Result<UniqueFd> connect_daemon(const std::string& dir);
// Sends `request` and returns the first reply.
Result<nlohmann::json> request(const std::string& dir, const nlohmann::json& body);

// The uid of the peer (SO_PEERCRED).
Result<uid_t> peer_uid(int sock);

}  // namespace ik::pool
