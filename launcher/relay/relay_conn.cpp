#include "relay/relay_conn.hpp"

#include <sys/socket.h>

#include <cerrno>

namespace ik::relay {

Io read_into(Side& s, ByteQueue& q, size_t& got) {
  size_t room = 0;
  unsigned char* p = q.write_area(room);
  got = 0;
  const ssize_t n = ::recv(s.fd.get(), p, room, MSG_DONTWAIT);
  if (n > 0) {
    got = static_cast<size_t>(n);
    // A short read means the socket is empty now; the next edge says more.
    if (got < room) s.readable = false;
    return Io::kDone;
  }
  if (n == 0) {
    s.eof = true;
    s.readable = false;
    return Io::kEof;
  }
  if (errno == EAGAIN || errno == EINTR) {
    s.readable = errno == EINTR;
    return Io::kAgain;
  }
  return Io::kError;
}

Io write_from(Side& s, ByteQueue& q) {
  // MSG_NOSIGNAL: a vanished peer is an error to handle, not a SIGPIPE.
  const ssize_t n = ::send(s.fd.get(), q.read_area(), q.pending(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n >= 0) {
    if (static_cast<size_t>(n) < q.pending()) s.writable = false;
    q.consume(static_cast<size_t>(n));
    return Io::kDone;
  }
  if (errno == EAGAIN || errno == EINTR) {
    s.writable = errno == EINTR;
    return Io::kAgain;
  }
  return Io::kError;
}

}  // namespace ik::relay
