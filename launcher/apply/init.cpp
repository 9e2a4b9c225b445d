#include "apply/init.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <initializer_list>

#include "common/exit_status.hpp"

namespace ik {

const sigset_t& forwarded_signals() {
  static const sigset_t set = [] {
    sigset_t s;
    sigemptyset(&s);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&s, sig);
    return s;
  }();
  return set;
}

void run_init(pid_t program) {
  // The forwarded signals and SIGCHLD are blocked (inherited from the
  // launcher). A blocked signal is queued even for PID 1, which otherwise
  // drops signals it has no handler for; sigwaitinfo then takes them in order.
  sigset_t wait_set = forwarded_signals();
  sigaddset(&wait_set, SIGCHLD);
  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(&wait_set, &info);
    if (sig < 0) {
      if (errno == EINTR) continue;
      _exit(125);
    }
    if (sig != SIGCHLD) {
      // The program leads its own session and process group; signal the
      // group like a terminal would, so its children see it too.
      if (kill(-program, sig) != 0) kill(program, sig);
      continue;
    }
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
      if (pid == program) _exit(exit_status_from_wait(status));
  }
}

}  // namespace ik
