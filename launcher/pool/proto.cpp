#include "pool/proto.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace ik::pool {

namespace {
constexpr size_t kMaxMessage = 256 * 1024;
constexpr size_t kMaxFds = 8;
}  // namespace

std::string socket_dir() {
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x == '/') return std::string(x) + "/isolated-kernel";
  return "/tmp/isolated-kernel-" + std::to_string(getuid());
}

Status ensure_private_dir(const std::string& dir) {
  // mkdir first: a directory someone else made in /tmp is then found, not trusted.
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("pool: create " + dir);
  struct stat st {};
  if (lstat(dir.c_str(), &st) != 0) return sys_error("pool: " + dir);
  if (!S_ISDIR(st.st_mode))
    return Error{"pool: socket directory " + dir, 0, "not a directory", "remove it, or set XDG_RUNTIME_DIR", 2};
  if (st.st_uid != getuid())
    return Error{"pool: socket directory " + dir, 0, "owned by uid " + std::to_string(st.st_uid) + ", not by you",
                 "remove it, or set XDG_RUNTIME_DIR to a directory of yours", 2};
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return Error{"pool: socket directory " + dir, 0, std::string("mode ") + mode + " lets others in",
                 "chmod 700 " + dir, 2};
  }
  return ok();
}

Status send_message(int sock, const nlohmann::json& body, const std::vector<int>& fds) {
  // The control buffer below holds kMaxFds; a longer list would be copied past its end.
  if (fds.size() > kMaxFds)
    return Error{"pool: send",
                 0,
                 std::to_string(fds.size()) + " descriptors in one message (at most " + std::to_string(kMaxFds) + ")",
                 {},
                 kExitSetup};
  std::string text = body.dump();
  iovec iov{text.data(), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  if (!fds.empty()) {
    msg.msg_control = ctl;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  if (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) return sys_error("pool: send");
  return ok();
}

Result<Message> recv_message(int sock) {
  // The message's length first (a seqpacket socket reports it with
  // MSG_PEEK | MSG_TRUNC, descriptors stay queued): a buffer of that size,
  // not one of kMaxMessage zeroed and faulted in for every message.
  ssize_t len;
  do len = recv(sock, nullptr, 0, MSG_PEEK | MSG_TRUNC);
  while (len < 0 && errno == EINTR);
  if (len < 0) return sys_error("pool: receive");
  std::string buf(std::min(static_cast<size_t>(len) + 1, kMaxMessage), '\0');
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  msg.msg_control = ctl;
  msg.msg_controllen = sizeof ctl;
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return sys_error("pool: receive");
  Message m;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      m.fds.emplace_back(fd);
    }
  }
  if (n == 0) return Error{"connection closed", 0, {}, {}, kExitSetup};
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return Error{"pool: receive", 0, "message too large", {}, kExitSetup};
  buf.resize(static_cast<size_t>(n));
  try {
    m.body = nlohmann::json::parse(buf);
  } catch (const std::exception& e) {
    return Error{"pool: receive", 0, std::string("bad message: ") + e.what(), {}, kExitSetup};
  }
  return m;
}

Result<UniqueFd> connect_daemon(const std::string& dir) {
  UniqueFd s(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!s.valid()) return sys_error("pool: socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = socket_path(dir);
  if (path.size() >= sizeof addr.sun_path) return Error{"pool: socket path too long", 0, path, {}, kExitSetup};
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return sys_error("pool: connect " + path);
  return s;
}

Result<nlohmann::json> request(const std::string& dir, const nlohmann::json& body) {
  auto s = connect_daemon(dir);
  if (!s) return s.error();
  IK_TRY(send_message(s->get(), body));
  auto reply = recv_message(s->get());
  if (!reply) return reply.error();
  return reply->body;
}

Result<uid_t> peer_uid(int sock) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return sys_error("pool: SO_PEERCRED");
  return cred.uid;
}

}  // namespace ik::pool
