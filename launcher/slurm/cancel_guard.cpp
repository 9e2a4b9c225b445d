#include "slurm/cancel_guard.hpp"
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

namespace ik::slurm {
namespace {

// What the pipe said before EOF: "job ID\n" once the job exists, "done\n"
// when there is nothing to cancel.
std::string read_until_eof(int fd) {
  std::string got;
  char buf[256];
  while (true) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) got.append(buf, static_cast<size_t>(n));
    else if (n == 0 || errno != EINTR) return got;
  }
}

[[noreturn]] void guard_main(int pipe_rd, const std::string& scancel, const std::string& log_path) {
  // Not part of the submitter's process group or terminal: only the pipe's
  // EOF ends the wait.
  setsid();
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) signal(s, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // stdin/stdout/stderr: not the caller's pipes or terminal (a caller that
  // reads our stdout to EOF must not wait for this process).
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) log = null;
  dup2(null, 0);
  dup2(log, 1);
  dup2(log, 2);
  dup2(pipe_rd, 3);
  syscall(SYS_close_range, 4u, ~0u, 0u);  // nothing else of the submitter's stays open here
  const std::string said = read_until_eof(3);
  if (said.find("done\n") != std::string::npos || said.rfind("job ", 0) != 0) _exit(0);
  const std::string job = said.substr(4, said.find('\n') - 4);
  std::fprintf(stderr, "isolated-kernel run: the submitter ended before Slurm job %s did: scancel %s\n", job.c_str(),
               job.c_str());
  std::fflush(stderr);
  execl(scancel.c_str(), "scancel", job.c_str(), static_cast<char*>(nullptr));
  std::fprintf(stderr, "isolated-kernel run: exec %s: %s\n", scancel.c_str(), std::strerror(errno));
  _exit(127);
}

}  // namespace

Result<CancelGuard> CancelGuard::start(const std::string& scancel, const std::string& log_path) {
  int p[2];
  // A socket pair, not a pipe: writes to it use MSG_NOSIGNAL, so a guard
  // that died (killed along with stray processes, the OOM killer) is an
  // EPIPE to ignore, not a SIGPIPE that kills this run with the job just
  // submitted or followed to its end. CLOEXEC: sbatch and squeue, run by
  // this process, must not hold our end (the guard would wait for them too).
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) != 0)
    return sys_error("socket pair for the Slurm cancel guard");
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(p[0]);
    close(p[1]);
    return sys_error("fork the Slurm cancel guard", e);
  }
  if (pid == 0) {
    close(p[1]);
    guard_main(p[0], scancel, log_path);
  }
  close(p[0]);
  CancelGuard g;
  g.pipe_ = UniqueFd(p[1]);
  g.pid_ = pid;
  return g;
}

void CancelGuard::job_submitted(const std::string& job_id) {
  if (!pipe_.valid()) return;
  const std::string line = "job " + job_id + "\n";
  (void)!send(pipe_.get(), line.data(), line.size(), MSG_NOSIGNAL);  // short: sent whole
}

void CancelGuard::release() {
  if (!pipe_.valid()) return;
  (void)!send(pipe_.get(), "done\n", 5, MSG_NOSIGNAL);
  pipe_ = UniqueFd();
  while (pid_ > 0 && waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

CancelGuard::~CancelGuard() {
  // Closing the write end without "done" is the guard's cue; it is in its
  // own session and reparented when we exit, so it is not waited for here.
  pipe_ = UniqueFd();
}

}  // namespace ik::slurm
