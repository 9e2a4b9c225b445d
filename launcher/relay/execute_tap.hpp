// Follows the client -> kernel shell stream of one client connection and
// keeps the header of the last execute_request whose signature checks out
// with the connection file's key: the launcher's notice of why the kernel
// died names it as parent_header, so clients show it in the output of the
// cell that was running. Not the parent of the kernel's iopub output: a
// kernel that crashes at once (SIGSEGV) dies before its IOPub thread sent
// anything.
// Checked because anyone who can reach the shell port (any local user, for
// a tcp port) could otherwise send an execute_request after the real one
// and take the notice away from the real cell. Jupyter's signature is the
// HMAC of header, parent_header, metadata and content (the frames after
// the signature, buffers excluded), fed to libcrypto as the bytes pass:
// nothing but the header (at most kMaxHeader bytes) and the signature is
// copied, so a cell of any size is checked in bounded memory. With no key
// in the connection file nothing is signed and any execute_request counts.
// Built with another msg_type, it keeps that request's header instead: on
// control, shutdown_request (apply/shutdown_watch.hpp).
#pragma once
#include <cstdint>
#include <string>

#include "relay/hmac.hpp"
#include "relay/zmtp.hpp"

namespace ik::relay {

class ExecuteRequestTap : public FrameObserver {
 public:
  // `last` receives the header (JSON text) of each verified execute_request.
  ExecuteRequestTap(std::string* last, std::string key, std::string scheme, std::string msg_type = "execute_request");
  void frame_begin(uint64_t size, bool command) override;
  void frame_bytes(const unsigned char* p, size_t n) override;
  void frame_end(bool more, bool command) override;

  static constexpr size_t kMaxHeader = 16 * 1024;
  static constexpr size_t kMaxSignature = 256;  // hex of a 1024-bit digest

 private:
  enum Frame { kSignature = 1, kHeader = 2, kContent = 5 };  // after the delimiter, counting it as 0
  void header_done();

  std::string* last_;
  std::string key_, scheme_, msg_type_;
  HmacStream mac_;
  int after_delimiter_ = -1;  // frames since "<IDS|MSG>" in this message; -1: not seen yet
  std::string frame_;         // the delimiter candidate, the signature or the header
  bool keep_ = false;         // copying this frame into frame_
  bool fits_ = false;         // this frame's size is within its bound
  bool wanted_ = false;       // this message is an execute_request being checked
  bool warned_ = false;
  std::string signature_, header_;
};

}  // namespace ik::relay
