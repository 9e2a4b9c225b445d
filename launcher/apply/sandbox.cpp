#include "apply/sandbox.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <optional>

#include "apply/caps.hpp"
#include "apply/cgroup.hpp"
#include "apply/exec.hpp"
#include "apply/init.hpp"
#include "apply/limits.hpp"
#include "apply/mounts.hpp"
#include "apply/network.hpp"
#include "apply/pid_order.hpp"
#include "apply/pty.hpp"
#include "apply/setup_channel.hpp"
#include "apply/seccomp.hpp"
#include "apply/spawn_program.hpp"
#include "apply/session.hpp"
#include "apply/userns.hpp"
#include "common/exit_status.hpp"
#include "common/file_io.hpp"
#include "common/log.hpp"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

extern char** environ;

namespace ik {
namespace {

struct Channels {
  UniqueFd go_read, go_write;          // parent -> child: "ids are mapped, go"
  UniqueFd report_read, report_write;  // child -> parent: a SetupFailure, or EOF on exec
  UniqueFd root_read, root_write;      // child -> parent: the new root's fd (unix socket)
};

Result<Channels> make_channels() {
  int go[2], rep[2], root[2];
  if (pipe2(go, O_CLOEXEC) != 0) return sys_error("pipe");
  Channels ch{UniqueFd(go[0]), UniqueFd(go[1]), {}, {}, {}, {}};
  if (pipe2(rep, O_CLOEXEC) != 0) return sys_error("pipe");
  ch.report_read.reset(rep[0]);
  ch.report_write.reset(rep[1]);
  // A socket, not a pipe: only unix sockets carry descriptors (SCM_RIGHTS).
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, root) != 0) return sys_error("socketpair");
  ch.root_read.reset(root[0]);
  ch.root_write.reset(root[1]);
  return ch;
}

// Close-on-exec for every fd above stderr, so nothing of ours leaks into the
// program. close_range first; /proc is not mounted yet in our view.
void mark_fds_cloexec() {
  if (syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) == 0) return;
  for (int fd = 3; fd < 65536; ++fd) fcntl(fd, F_SETFD, FD_CLOEXEC);
}

// The program's own steps after fork (it is not PID 1). `pty_slave`: its
// terminal when plan.terminal.pty.
Status program_steps(const Plan& plan, int pty_slave) {
  // PDEATHSIG is per parent: re-arm it for init.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return sys_error("prctl(PR_SET_PDEATHSIG)");
  if (getppid() != 1) return Error{"sandbox init died during set-up", 0, {}, {}, kExitSetup};
  if (pty_slave >= 0) {
    // With a pty: a new session whose controlling terminal is the sandbox's
    // own pty (apply/pty.hpp); the caller's terminal is out of reach.
    if (setsid() < 0) return sys_error("setsid");
    IK_TRY(attach_to_pty(pty_slave, plan.terminal.stderr_to_pty));
  } else {
    // No controlling terminal, so TIOCSTI cannot type into the caller's
    // terminal (CVE-2017-5226); its own process group (apply/session.cpp).
    IK_TRY(leave_terminal());
  }
  IK_TRY(apply_rlimits(plan.rlimits));  // the limits no cgroup enforces
  if (chdir(plan.cwd.c_str()) != 0) {
    if (plan.cwd_explicit)
      return Error{"--chdir " + plan.cwd, errno, "not a directory inside the sandbox",
                   "mount it with --mnt, or choose another directory", kExitSetup};
    // Said always, not only with -v: a relative path (python3 code.py) would
    // otherwise fail with a message about HOME.
    const char* where = plan.id.home.c_str();
    if (chdir(where) != 0) {
      where = "/";
      if (chdir(where) != 0) return sys_error("chdir /");
    }
    log::warn("note: the current directory %s is not mounted in the sandbox, so %s starts in %s "
              "(add -m . to mount it, or pick one with --chdir)",
              plan.cwd.c_str(), plan.argv.empty() ? "the program" : plan.argv[0].c_str(), where);
  }
  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, nullptr) != 0) return sys_error("unblock signals");
  for (int sig = 1; sig < NSIG; ++sig) signal(sig, SIG_DFL);
  return ok();
}

// The launcher reaches the kernel's sockets under the sandbox's root. Via
// /proc/<init>/root that needs ptrace access to the init, and an init that
// allows it (dumpable) lets the program (same uid) ptrace it too, read its
// memory (the plan, the kernel's environment) and stop it. So the parent
// gets a descriptor of the root, and then the init stops being dumpable.
Status hand_over_root_and_seal_init(int root_sock) {
  UniqueFd root(open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return sys_error("open the sandbox's root");
  IK_TRY(send_fd(root_sock, root.get()));
  // Not dumpable: ptrace, process_vm_readv, pidfd_getfd and /proc/1/{mem,
  // environ,root,cwd,fd} of the init now need CAP_SYS_PTRACE in the user
  // namespace of its memory, which is the caller's (the init is a copy of the
  // launcher, never exec'd inside); nothing in the sandbox holds it. Before
  // the fork, so no program ever sees a dumpable init. The program inherits
  // the flag only until its execve, which makes a normal binary dumpable
  // again (the kernel's begin_new_exec), so its own /proc works as usual.
  if (prctl(PR_SET_DUMPABLE, 0) != 0) return sys_error("prctl(PR_SET_DUMPABLE, 0)");
  return ok();
}

// The program's pty, from the sandbox's devpts (so after pivot_root): the
// master goes to isolate as a second message after the root.
Status hand_over_pty(int sock, UniqueFd& slave) {
  auto pty = open_sandbox_pty();
  if (!pty) return pty.error();
  IK_TRY(send_fd(sock, pty->master.get()));
  slave = std::move(pty->slave);
  return ok();
}

// Everything the sandbox's PID 1 does before it becomes the init, in order.
Status child_steps(const Plan& plan, int root_sock, UniqueFd& pty_slave) {
  // The network namespace is made on a helper thread meanwhile (see
  // PrivateNetwork), and entered before anything else runs.
  move_setup_pids_up();  // before the network thread takes a pid (apply/pid_order.hpp)
  std::optional<PrivateNetwork> net;
  if (plan.new_net) {
    auto started = PrivateNetwork::start();
    if (!started) return started.error();
    net.emplace(std::move(*started));
  }
  IK_TRY(build_root_and_pivot(plan));
  IK_TRY(hand_over_root_and_seal_init(root_sock));
  if (plan.terminal.pty) IK_TRY(hand_over_pty(root_sock, pty_slave));
  if (net) IK_TRY(net->enter());  // joins the network thread: no task of ours but init from here
  IK_TRY(set_hostname(plan.hostname));
  mark_fds_cloexec();
  next_pid_is_two();  // while init has its capabilities (apply/pid_order.hpp)
  // Caps, no_new_privs and seccomp are set here, before the fork, so that
  // init and program both carry them. Seccomp comes last.
  IK_TRY(drop_all_capabilities());
  IK_TRY(set_no_new_privs());
  if (plan.seccomp) IK_TRY(load_seccomp_filter(SeccompPolicy{plan.allow_userns}));
  else log::warn("WARNING: --seccomp=off: the syscall filter is disabled (debugging only)");
  return ok();
}

[[noreturn]] void fail(int report_fd, const Error& e) {
  send_setup_failure(report_fd, e);
  _exit(e.exit_code);
}

// The init is a copy of the launcher: its environment block still holds the
// caller's variables, tokens included. Wipe it; the plan carries its own
// copies. (The init is also made non-dumpable, which closes /proc/1/environ
// and its memory to the program; this keeps the secrets out all the same.)
void wipe_inherited_environment() {
  for (char** e = environ; e && *e; ++e) explicit_bzero(*e, std::strlen(*e));
}

// The program's process until execve (see spawn_sharing_memory: it shares
// the init's memory until then, while the init waits).
struct ProgramStart {
  const Plan* plan;
  int report_fd;
  int pty_slave;  // its terminal when plan.terminal.pty, else -1
};

int program_main(void* arg) {
  const auto* start = static_cast<const ProgramStart*>(arg);
  Status p = program_steps(*start->plan, start->pty_slave);
  if (!p) fail(start->report_fd, p.error());
  fail(start->report_fd, exec_program(start->plan->argv, start->plan->env));
}

[[noreturn]] void child_main(const Plan& plan, Channels& ch, ChildStdio* stdio) {
  wipe_inherited_environment();
  // Die with the launcher. If it is already gone, the read below sees EOF.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Leave the launcher's process group: jupyter_client interrupts with
  // killpg() on that group, and the launcher already forwards what it gets.
  // Staying in it would deliver every SIGINT to the kernel twice. And give
  // up the caller's controlling terminal: in a background group of it, a
  // write of set-up (-v, errors) would meet SIGTTOU under `stty tostop`,
  // which a PID 1 without a handler never leaves. A group, not a session:
  // see leave_terminal() for what a session costs.
  (void)leave_terminal();
  ch.go_write.reset();
  ch.report_read.reset();
  ch.root_read.reset();
  char go;
  if (read(ch.go_read.get(), &go, 1) != 1) _exit(kExitSetup);
  // getppid() says nothing across a pid namespace, so ask the pipe: the
  // launcher holds its end open for life. A hang-up means it died before
  // PDEATHSIG was armed (which would then watch the wrong parent).
  pollfd lifeline{ch.go_read.get(), POLLIN, 0};
  if (poll(&lifeline, 1, 0) < 0 || (lifeline.revents & (POLLHUP | POLLERR))) _exit(kExitSetup);
  ch.go_read.reset();
  // We are inside the sandbox's cgroup by now. A cgroup namespace made by
  // clone() would be rooted at the launcher's cgroup (the kernel copies
  // namespaces before CLONE_INTO_CGROUP moves the child), so that
  // /proc/self/cgroup would show "/../isolated-kernel-N"; make it here.
  if (plan.cgroup.use && unshare(CLONE_NEWCGROUP) != 0)
    fail(ch.report_write.get(), sys_error("unshare(CLONE_NEWCGROUP)"));
  UniqueFd pty_slave;
  Status s = child_steps(plan, ch.root_write.get(), pty_slave);
  if (!s) fail(ch.report_write.get(), s.error());
  ch.root_write.reset();
  // After set-up (whose messages still go to the caller's stderr), before
  // the program starts: from here on no process inside holds the caller's stdio.
  if (stdio) {
    Status io = stdio->install_in_child();
    if (!io) fail(ch.report_write.get(), io.error());
  }
  // vfork-like: the program neither copies the init's memory nor makes the
  // exec tear a copy down (about 0.1 ms of CPU a start); the init resumes
  // once the program has exec'd (or failed and exited).
  ProgramStart start{&plan, ch.report_write.get(), pty_slave.get()};
  pid_t program = spawn_sharing_memory(&program_main, &start);
  if (program < 0) fail(ch.report_write.get(), sys_error("start the program (clone)"));
  // The report pipe stays open in the program until its exec closes it.
  ch.report_write.reset();
  if (plan.terminal.pty) {
    // The program holds the terminal now; the init keeps neither it nor
    // the caller's (its master side is isolate's alone).
    pty_slave.reset();
    release_caller_stdio();
  }
  // The init needs no descriptor from here on; whatever the launcher
  // inherited (a client's fds, the root socket's peer) is no business of it.
  syscall(SYS_close_range, 3u, ~0u, 0u);
  run_init(program);
}

long clone_flags(const Plan& plan) {
  // CLONE_NEWUSER is created first by the kernel, so the child holds every
  // capability over the other new namespaces. No CLONE_NEWNET even when
  // plan.new_net: the child makes that one on a thread (child_steps).
  long flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
  if (!plan.cgroup.use) flags |= CLONE_NEWCGROUP;  // else the child unshares it inside its cgroup
  return flags;
}

// struct clone_args of <linux/sched.h> up to `cgroup` (Linux 5.7).
struct CloneArgs {
  std::uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

// The sandbox's init starts inside its cgroup: clone3(CLONE_INTO_CGROUP)
// puts it there atomically, before it runs an instruction. Without it
// (ENOSYS, or E2BIG/EINVAL before Linux 5.7; or anything else clone3 does
// not like) a plain clone(), and spawn_sandbox() writes the pid into
// cgroup.procs before sending "go": until then the child only waits, so
// nothing it starts can begin outside the cgroup either way.
// No stack given to either: fork-like, the child runs on a copy of ours.
pid_t clone_sandbox(long flags, int cgroup_fd, bool& placed) {
  placed = false;
  if (cgroup_fd >= 0) {
    CloneArgs args{};
    args.flags = static_cast<std::uint64_t>(flags) | CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = static_cast<std::uint64_t>(cgroup_fd);
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid >= 0) {
      placed = true;
      return static_cast<pid_t>(pid);
    }
    log::step("clone3(CLONE_INTO_CGROUP): %s; clone, then cgroup.procs", std::strerror(errno));
  }
  return static_cast<pid_t>(syscall(SYS_clone, flags | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
}

void log_limits(const Plan& plan) {
  for (const auto& u : plan.limit_uses) log::step("limit %s %s: %s", u.option.c_str(), u.value.c_str(), u.via.c_str());
  if (!plan.cgroup.why.empty()) log::step("cgroup: %s", plan.cgroup.why.c_str());
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
  // Right after exec the program is the init's only child. The children
  // file needs no ptrace access, so it stays readable though the init is
  // not dumpable (a pidfd or SCM_CREDENTIALS from inside would do too, at
  // the cost of another message in the set-up protocol).
  std::string path = "/proc/" + std::to_string(pid_) + "/task/" + std::to_string(pid_) + "/children";
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  char buf[64] = {};
  if (fd.valid() && read(fd.get(), buf, sizeof buf - 1) > 0) program_ = static_cast<pid_t>(std::atoi(buf));
  if (program_ > 0) log::step("the program is pid %d on the host", static_cast<int>(program_));
  else log::step("the program's host pid is unknown: signals go through the sandbox's init");
}

std::optional<Error> SandboxProcess::deferred_setup_error() {
  // Only once the init is reaped: its pid namespace, and with it every
  // holder of the channels' other ends, is gone, so neither read blocks.
  if (pid_ > 0 || !start_report_.valid()) return std::nullopt;
  UniqueFd report = std::move(start_report_), root = std::move(start_root_);
  Error child_error;
  auto got = receive_setup_failure(report.get(), child_error);
  if (!got) return got.error();
  if (*got) return child_error;
  // No report and no root: the init died before pivot_root (killed), which
  // the waiting spawn_sandbox reports the same way.
  if (auto r = receive_fd(root.get()); !r) return r.error();
  return std::nullopt;
}

int SandboxProcess::wait() {
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  return exit_status_from_wait(status);
}

Result<SandboxProcess> spawn_sandbox(const Plan& plan, ChildStdio* stdio, bool wait_for_exec) {
  std::optional<SandboxCgroup> cgroup;
  if (plan.cgroup.use) {
    auto cg = SandboxCgroup::create(plan.cgroup);
    if (!cg) {
      if (plan.cgroup.required) return cg.error();
      // --limits=auto never fails a run that rlimits can do.
      log::warn("warning: %s; limits use rlimits", cg.error().describe().c_str());
      if (!plan.rlimit_fallback) return cg.error();
      Plan fallback = plan;  // the planner's fallback, not a new plan
      fallback.cgroup = CgroupPlan{};
      fallback.cgroup.why = plan.rlimit_fallback->why;
      fallback.rlimits = plan.rlimit_fallback->rlimits;
      fallback.limit_uses = plan.rlimit_fallback->uses;
      fallback.rlimit_fallback.reset();
      return spawn_sandbox(fallback, stdio, wait_for_exec);
    }
    cgroup.emplace(std::move(*cg));
  }
  log_limits(plan);
  warn_ineffective_limits(plan.rlimits, plan.id.outer_uid);
  auto ch = make_channels();
  if (!ch) return ch.error();
  long flags = clone_flags(plan);
  log::step("clone: new user, mount, pid, ipc, uts, cgroup namespaces%s%s",
            plan.new_net ? " (the network namespace follows in the child)" : "",
            cgroup ? (" into cgroup " + cgroup->dir()).c_str() : "");
  bool placed = false;
  pid_t pid = clone_sandbox(flags, cgroup ? cgroup->fd() : -1, placed);
  if (pid < 0) {
    const int clone_errno = errno;  // before anything else can overwrite it
    return diagnose_namespace_failure(clone_errno, read_sysctl, running_in_container());
  }
  if (pid == 0) child_main(plan, *ch, stdio);
  if (stdio) stdio->close_child_ends();

  ch->go_read.reset();
  ch->report_write.reset();
  ch->root_write.reset();  // so a child that dies before sending gives EOF, not a hang
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  int pidfd_errno = errno;
  SandboxProcess proc(pid, std::move(pidfd));  // from here on, kills the child on error
  // Before "go": the child waits for it, so it runs nothing outside its cgroup.
  if (cgroup && !placed) IK_TRY(cgroup->add_process(pid));
  proc.own_cgroup(cgroup);  // removed after the child is reaped, whatever happens next
  if (proc.pidfd() < 0) return sys_error("pidfd_open", pidfd_errno, "needs Linux 5.3 or newer");
  IK_TRY(write_id_maps(pid, plan.id));
  if (write(ch->go_write.get(), "g", 1) != 1) return sys_error("start the sandbox");
  proc.keep_lifeline(std::move(ch->go_write));
  if (!wait_for_exec && !plan.terminal.pty) {  // the pty's master must come now
    proc.defer_start_report(std::move(ch->report_read), std::move(ch->root_read));
    return proc;
  }
  Error child_error;
  auto got = receive_setup_failure(ch->report_read.get(), child_error);
  if (!got) return got.error();
  if (*got) {
    proc.wait();
    return child_error;
  }
  // Sent before the fork of the program, so already queued.
  auto root = receive_fd(ch->root_read.get());
  if (!root) return root.error();
  proc.keep_root(std::move(*root));
  if (plan.terminal.pty) {
    auto master = receive_fd(ch->root_read.get());
    if (!master) return master.error();
    proc.keep_pty_master(std::move(*master));
  }
  proc.find_program();
  return proc;
}

}  // namespace ik
