#include "apply/sandbox.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <optional>

#include "apply/caps.hpp"
#include "apply/exec.hpp"
#include "apply/init.hpp"
#include "apply/limits.hpp"
#include "apply/mounts.hpp"
#include "apply/network.hpp"
#include "apply/report.hpp"
#include "apply/seccomp.hpp"
#include "apply/userns.hpp"
#include "common/log.hpp"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char** environ;

namespace ik {
namespace {

struct Channels {
  UniqueFd go_read, go_write;          // parent -> child: "ids are mapped, go"
  UniqueFd report_read, report_write;  // child -> parent: a Report, or EOF on exec
};

Result<Channels> make_channels() {
  int go[2], rep[2];
  if (pipe2(go, O_CLOEXEC) != 0) return sys_error("pipe");
  if (pipe2(rep, O_CLOEXEC) != 0) {
    close(go[0]);
    close(go[1]);
    return sys_error("pipe");
  }
  return Channels{UniqueFd(go[0]), UniqueFd(go[1]), UniqueFd(rep[0]), UniqueFd(rep[1])};
}

// Close-on-exec for every fd above stderr, so nothing of ours leaks into the
// program. close_range first; /proc is not mounted yet in our view.
void mark_fds_cloexec() {
  if (syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) == 0) return;
  for (int fd = 3; fd < 65536; ++fd) fcntl(fd, F_SETFD, FD_CLOEXEC);
}

// The program's own steps after fork (it is not PID 1).
Status program_steps(const Plan& plan) {
  // PDEATHSIG is per parent: re-arm it for init.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return sys_error("prctl(PR_SET_PDEATHSIG)");
  if (getppid() != 1) return Error{"sandbox init died during set-up", 0, {}, {}, kExitSetup};
  // New session: no controlling terminal, so TIOCSTI cannot type into the
  // caller's terminal (CVE-2017-5226).
  if (setsid() < 0) return sys_error("setsid");
  IK_TRY(apply_rlimits(plan.limits));
  if (chdir(plan.cwd.c_str()) != 0) {
    if (plan.cwd_explicit)
      return Error{"--chdir " + plan.cwd, errno, "not a directory inside the sandbox",
                   "mount it with --mnt, or choose another directory", kExitSetup};
    log::step("cwd %s is not visible inside; using %s", plan.cwd.c_str(), plan.id.home.c_str());
    if (chdir(plan.id.home.c_str()) != 0 && chdir("/") != 0) return sys_error("chdir /");
  }
  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, nullptr) != 0) return sys_error("unblock signals");
  for (int sig = 1; sig < NSIG; ++sig) signal(sig, SIG_DFL);
  return ok();
}

// Everything the sandbox's PID 1 does before it becomes the init, in order.
Status child_steps(const Plan& plan) {
  // The network namespace is made on a helper thread meanwhile (see
  // PrivateNetwork), and entered before anything else runs.
  std::optional<PrivateNetwork> net;
  if (plan.new_net) {
    auto started = PrivateNetwork::start();
    if (!started) return started.error();
    net.emplace(std::move(*started));
  }
  IK_TRY(build_root_and_pivot(plan));
  if (net) IK_TRY(net->enter());
  IK_TRY(set_hostname(plan.hostname));
  mark_fds_cloexec();
  // Caps, no_new_privs and seccomp are set here, before the fork, so that
  // init and program both carry them. Seccomp comes last.
  IK_TRY(drop_all_capabilities());
  IK_TRY(set_no_new_privs());
  if (plan.seccomp) IK_TRY(load_seccomp_filter(SeccompPolicy{plan.allow_userns}));
  else log::warn("WARNING: --seccomp=off: the syscall filter is disabled (debugging only)");
  return ok();
}

[[noreturn]] void fail(int report_fd, const Error& e) {
  send_report(report_fd, e);
  _exit(e.exit_code);
}

// The init is a copy of the launcher: its environment block (what
// /proc/1/environ shows from inside, same uid) still holds the caller's
// variables, tokens included. Wipe it; the plan carries its own copies.
void wipe_inherited_environment() {
  for (char** e = environ; e && *e; ++e) explicit_bzero(*e, std::strlen(*e));
}

[[noreturn]] void child_main(const Plan& plan, Channels& ch) {
  wipe_inherited_environment();
  // Die with the launcher. If it is already gone, the read below sees EOF.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Leave the launcher's process group: jupyter_client interrupts with
  // killpg() on that group, and the launcher already forwards what it gets.
  // Staying in it would deliver every SIGINT to the kernel twice.
  setsid();
  ch.go_write.reset();
  ch.report_read.reset();
  char go;
  if (read(ch.go_read.get(), &go, 1) != 1) _exit(kExitSetup);
  // getppid() says nothing across a pid namespace, so ask the pipe: the
  // launcher holds its end open for life. A hang-up means it died before
  // PDEATHSIG was armed (which would then watch the wrong parent).
  pollfd lifeline{ch.go_read.get(), POLLIN, 0};
  if (poll(&lifeline, 1, 0) < 0 || (lifeline.revents & (POLLHUP | POLLERR))) _exit(kExitSetup);
  ch.go_read.reset();
  Status s = child_steps(plan);
  if (!s) fail(ch.report_write.get(), s.error());
  pid_t program = fork();
  if (program < 0) fail(ch.report_write.get(), sys_error("fork the program"));
  if (program == 0) {
    Status p = program_steps(plan);
    if (!p) fail(ch.report_write.get(), p.error());
    fail(ch.report_write.get(), exec_program(plan.argv, plan.env));
  }
  // The report pipe stays open in the program until its exec closes it.
  ch.report_write.reset();
  run_init(program);
}

long clone_flags(const Plan& plan) {
  // CLONE_NEWUSER is created first by the kernel, so the child holds every
  // capability over the other new namespaces. No CLONE_NEWNET even when
  // plan.new_net: the child makes that one on a thread (child_steps).
  (void)plan;
  long flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;
  return flags;
}

}  // namespace

SandboxProcess::~SandboxProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void SandboxProcess::signal(int sig) const {
  if (pid_ > 0) ::kill(pid_, sig);
}

void SandboxProcess::signal_program(int sig) const {
  // Synchronous: when this returns the signal is pending in the program, so
  // a message the relay forwards next (jupyter_client interrupts, then sends
  // shutdown_request) cannot overtake it. Through the init it could.
  if (program_ > 0 && ::kill(-program_, sig) == 0) return;
  signal(sig);
}

void SandboxProcess::find_program() {
  // Right after exec the program is the init's only child.
  std::string path = "/proc/" + std::to_string(pid_) + "/task/" + std::to_string(pid_) + "/children";
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return;
  char buf[64] = {};
  if (read(fd.get(), buf, sizeof buf - 1) > 0) program_ = static_cast<pid_t>(std::atoi(buf));
}

int SandboxProcess::wait() {
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  return exit_status_from_wait(status);
}

Result<SandboxProcess> spawn_sandbox(const Plan& plan) {
  warn_ineffective_limits(plan.limits, plan.id.outer_uid);
  auto ch = make_channels();
  if (!ch) return ch.error();
  // A raw clone() without CLONE_VM behaves like fork(): the child runs on a
  // copy of our stack and we need no separate one.
  long flags = clone_flags(plan);
  log::step("clone: new user, mount, pid, ipc, uts, cgroup namespaces%s",
            plan.new_net ? " (the network namespace follows on a thread of the child)" : "");
  pid_t pid = static_cast<pid_t>(syscall(SYS_clone, flags | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
  if (pid < 0) {
    const int clone_errno = errno;  // before anything else can overwrite it
    return diagnose_namespace_failure(clone_errno, read_sysctl, running_in_container());
  }
  if (pid == 0) child_main(plan, *ch);

  ch->go_read.reset();
  ch->report_write.reset();
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  int pidfd_errno = errno;
  SandboxProcess proc(pid, std::move(pidfd));  // from here on, kills the child on error
  if (proc.pidfd() < 0) return sys_error("pidfd_open", pidfd_errno, "needs Linux 5.3 or newer");
  IK_TRY(write_id_maps(pid, plan.id));
  if (write(ch->go_write.get(), "g", 1) != 1) return sys_error("start the sandbox");
  proc.keep_lifeline(std::move(ch->go_write));
  Error child_error;
  auto got = receive_report(ch->report_read.get(), child_error);
  if (!got) return got.error();
  if (*got) {
    proc.wait();
    return child_error;
  }
  proc.find_program();
  return proc;
}

}  // namespace ik
