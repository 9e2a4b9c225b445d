#include "apply/session.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/fd.hpp"
#include "common/log.hpp"

namespace ik {
namespace {

Status new_session() {
  if (setsid() < 0) return sys_error("setsid");
  return ok();
}

}  // namespace

Status leave_terminal() {
  // Before setpgid: setsid() fails for a process group leader, and it is
  // the fallback. /dev/tty opens our controlling terminal, whatever fd (if
  // any) we hold of it; O_NOCTTY|O_NONBLOCK: acquire nothing, wait for no
  // carrier.
  UniqueFd tty(open("/dev/tty", O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC));
  if (!tty.valid()) {
    // ENXIO: no controlling terminal; EIO: it was hung up, which detached
    // the whole session from it. Anything else (no /dev/tty in the view,
    // say): we cannot tell, so a new session, which has none for sure.
    if (errno != ENXIO && errno != EIO) return new_session();
  } else if (ioctl(tty.get(), TIOCNOTTY) != 0) {
    return new_session();
  }
  // No controlling terminal from here on: TIOCSCTTY needs a session leader,
  // and /dev/tty now fails with ENXIO. Its own group, for the launcher's
  // signals (kill(-pid)); the groups of the caller's session are outside
  // our pid namespace, so setpgid cannot join one of them.
  if (setpgid(0, 0) != 0) return sys_error("setpgid");
  return ok();
}

}  // namespace ik
