// The launcher's last words to the clients of a kernel that died: a signed
// iopub `stream` (stderr) message "Kernel stopped: <why>" and a `status`
// idle message, both with the last execute_request as parent, so nbclient,
// nbgrader's feedback and JupyterLab show why in the running cell's output
// instead of a bare "kernel died". Built here, sent by the relay
// (Relay::publish_to_iopub) between two of the kernel's messages.
#pragma once
#include <string>
#include <vector>

#include "common/error.hpp"
#include "relay/connection_file.hpp"

namespace ik::relay {

// One Jupyter message as wire frames: topic, "<IDS|MSG>", signature (HMAC
// over header, parent_header, metadata and content; "" without a key),
// header, parent_header, metadata, content.
Result<std::vector<std::string>> signed_frames(const ConnectionInfo& conn, const std::string& topic,
                                               const std::string& header, const std::string& parent_header,
                                               const std::string& metadata, const std::string& content);

// A message header as the launcher writes it (fresh msg_id, version 5.3).
std::string message_header(const std::string& msg_type, const std::string& session);

// Both messages of the notice, ZMTP-encoded back to back. `parent_header`
// is the JSON text of the execute_request's header, or "" for {}.
Result<std::string> exit_notice_wire(const ConnectionInfo& conn, const std::string& parent_header,
                                     const std::string& why);

}  // namespace ik::relay
