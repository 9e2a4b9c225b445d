#include "apply/pty.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <string>

namespace ik {
namespace {

// The slave by its own master (Linux 4.13): no path lookup, so it is surely
// this pty's peer. Else by name, in the same (the sandbox's) devpts.
int open_slave(int master) {
  int fd = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd >= 0 || (errno != EINVAL && errno != ENOTTY)) return fd;
  unsigned n = 0;
  if (ioctl(master, TIOCGPTN, &n) != 0) return -1;
  return open(("/dev/pts/" + std::to_string(n)).c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
}

// Like script(1) and ssh: the new terminal starts with the caller's modes
// (erase key, UTF-8 input, ...) and size. Termios and window-size ioctls
// on a pty master act on its slave.
void copy_caller_terminal(int master) {
  termios modes;
  if (tcgetattr(STDIN_FILENO, &modes) == 0) tcsetattr(master, TCSANOW, &modes);
  winsize ws;
  if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 || ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0)
    ioctl(master, TIOCSWINSZ, &ws);
}

}  // namespace

Result<SandboxPty> open_sandbox_pty() {
  const char* hint = "the sandbox's /dev/pts (a new devpts instance) has no pty; try --no-pty";
  // /dev/ptmx is a link to it; the node itself says which instance this is.
  // O_NOCTTY: the init leads a session of its own and must not take it.
  SandboxPty p;
  p.master.reset(open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!p.master.valid()) return sys_error("open /dev/pts/ptmx inside the sandbox", errno, hint);
  if (unlockpt(p.master.get()) != 0) return sys_error("unlockpt", errno, hint);
  copy_caller_terminal(p.master.get());
  p.slave.reset(open_slave(p.master.get()));
  if (!p.slave.valid()) return sys_error("open the pty's slave inside the sandbox", errno, hint);
  return p;
}

Status attach_to_pty(int slave, bool stderr_too) {
  // We lead a new session with no terminal yet: this one becomes it, so
  // job control, /dev/tty and Ctrl-C/Ctrl-Z work inside.
  if (ioctl(slave, TIOCSCTTY, 0) != 0) return sys_error("make the pty the program's controlling terminal");
  // dup2 clears close-on-exec on the copies; the original closes at exec.
  for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) {
    if (fd == STDERR_FILENO && !stderr_too) continue;
    if (dup2(slave, fd) < 0) return sys_error("dup2 the pty onto fd " + std::to_string(fd));
  }
  return ok();
}

void release_caller_stdio() {
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) {
    for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) close(fd);
    return;
  }
  for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) dup2(null, fd);
  if (null > STDERR_FILENO) close(null);
}

}  // namespace ik
