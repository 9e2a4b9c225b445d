#include "pool/attach.hpp"

#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "common/fd.hpp"

namespace ik::pool {

namespace {

int sys_open_tree(int dfd, const char* path, unsigned flags) {
  return static_cast<int>(syscall(SYS_open_tree, dfd, path, flags));
}
int sys_move_mount(int from_dfd, const char* from, int to_dfd, const char* to, unsigned flags) {
  return static_cast<int>(syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags));
}
int sys_mount_setattr(int dfd, const char* path, unsigned flags, mount_attr* attr) {
  return static_cast<int>(syscall(SYS_mount_setattr, dfd, path, flags, attr, sizeof *attr));
}

// mkdir of `path` whose parent sits on a mount the sandbox's set-up made
// read-only once built (the root tmpfs, a sealed /etc): a cold start creates
// its mount points before that, so we lift that one mount's read-only flag
// (not recursive) for the mkdir and set it again. Nothing runs in the
// sandbox meanwhile but its init and the waiter, which waits for this claim;
// the kernel itself can never do this (no capabilities, and its seccomp
// filter denies mount_setattr). A flag the sandbox cannot change (a host
// mount's read-only, locked in its user namespace) keeps EROFS.
std::string parent_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

bool mkdir_under_sealed(const std::string& path) {
  // mount_setattr acts on a mount's root only (EINVAL elsewhere): the
  // nearest ancestor of `path` that is one holds it.
  mount_attr open_up{};
  open_up.attr_clr = MOUNT_ATTR_RDONLY;
  UniqueFd mnt;
  for (std::string at = parent_of(path);; at = parent_of(at)) {
    mnt.reset(open(at.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!mnt.valid()) return false;
    if (sys_mount_setattr(mnt.get(), "", AT_EMPTY_PATH, &open_up) == 0) break;
    if (errno != EINVAL || at == "/") {
      errno = EROFS;
      return false;
    }
  }
  const bool made = mkdir(path.c_str(), 0755) == 0 || errno == EEXIST;
  const int err = errno;
  mount_attr seal{};
  seal.attr_set = MOUNT_ATTR_RDONLY;
  if (sys_mount_setattr(mnt.get(), "", AT_EMPTY_PATH, &seal) != 0) return false;  // the claim fails: never handed out
  errno = err;
  return made;
}

// mkdir -p inside the sandbox (we are in its mount namespace, as its user),
// modes as the launch's umask makes them (set by our caller).
bool make_dirs(const std::string& path) {
  for (size_t p = 1; p <= path.size(); ++p) {
    if (p != path.size() && path[p] != '/') continue;
    const std::string part = path.substr(0, p);
    if (mkdir(part.c_str(), 0755) == 0 || errno == EEXIST) continue;
    if (errno != EROFS || !mkdir_under_sealed(part)) return false;
  }
  return true;
}

// The child's whole job; returns an error text, empty on success.
std::string attach_in_child(pid_t init_pid, const std::vector<MountOp>& ops, unsigned long long tmpfs_size, uid_t uid,
                            gid_t gid) {
  const auto fail = [](const std::string& what) { return what + ": " + std::strerror(errno); };
  // Clones first, while our mount namespace (a copy of the host's) still
  // resolves the host paths: a detached copy of the tree, with the cold
  // bind's nosuid,nodev[,ro], that move_mount can place in another namespace.
  std::vector<UniqueFd> trees(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].kind != OpKind::kBind) continue;
    trees[i].reset(sys_open_tree(AT_FDCWD, ops[i].src.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
    if (!trees[i].valid()) return fail("open_tree " + ops[i].src);
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (ops[i].readonly ? MOUNT_ATTR_RDONLY : 0);
    if (sys_mount_setattr(trees[i].get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr) != 0)
      return fail("mount_setattr " + ops[i].src);
  }
  const std::string ns = "/proc/" + std::to_string(init_pid) + "/ns/";
  UniqueFd userns(open((ns + "user").c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd mntns(open((ns + "mnt").c_str(), O_RDONLY | O_CLOEXEC));
  if (!userns.valid() || !mntns.valid()) return fail("open " + ns);
  // User namespace first: it gives us every capability over the mount
  // namespace it owns (we created its parent); setns(user) needs a
  // single-threaded caller, which this forked child is.
  if (setns(userns.get(), CLONE_NEWUSER) != 0) return fail("setns user");
  if (setns(mntns.get(), CLONE_NEWNS) != 0) return fail("setns mnt");  // also sets root and cwd to its root
  // Files we create belong to the sandbox's user (our uid maps to it).
  for (size_t i = 0; i < ops.size(); ++i) {
    const MountOp& op = ops[i];
    if (op.kind == OpKind::kFile) {
      // Its directory may not exist yet: a connection file directly in a
      // directory that holds the working directory gets no tmpfs of its own
      // (kernel/launch.cpp) and sorts before the working directory's bind;
      // a cold start creates the parents too (apply/mounts.cpp create_file).
      const std::string parent = op.dest.substr(0, op.dest.rfind('/'));
      if (!parent.empty() && !make_dirs(parent)) return fail("mkdir " + parent);
      UniqueFd fd(open(op.dest.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, op.mode));
      if (!fd.valid()) return fail("create " + op.dest);
      if (fchmod(fd.get(), op.mode) != 0) return fail("chmod " + op.dest);  // exactly op.mode, whatever our umask
      if (write(fd.get(), op.content.data(), op.content.size()) != static_cast<ssize_t>(op.content.size()))
        return fail("write " + op.dest);
      continue;
    }
    // Inside a host bind the mount point exists on the host (the planner
    // checked): never create it there, as a cold start does not.
    struct stat st {};
    if (op.point_on_host ? stat(op.dest.c_str(), &st) != 0 : !make_dirs(op.dest)) return fail("mount point " + op.dest);
    if (op.kind == OpKind::kTmpfs) {
      std::string data = "mode=" + [&] {
        char b[16];
        std::snprintf(b, sizeof b, "%o", op.mode);
        return std::string(b);
      }() + ",size=" + std::to_string(tmpfs_size);
      if (op.owned) data += ",uid=" + std::to_string(uid) + ",gid=" + std::to_string(gid);
      if (mount("tmpfs", op.dest.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, data.c_str()) != 0)
        return fail("tmpfs " + op.dest);
    } else if (sys_move_mount(trees[i].get(), "", AT_FDCWD, op.dest.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
      return fail("move_mount " + op.src + " to " + op.dest);
    }
  }
  return {};
}

}  // namespace

Status attach_launch_ops(pid_t init_pid, const std::vector<MountOp>& ops, unsigned long long tmpfs_size,
                         uid_t inner_uid, gid_t inner_gid, unsigned launch_umask) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return sys_error("pool: pipe");
  UniqueFd rd(p[0]), wr(p[1]);
  pid_t pid = fork();
  if (pid < 0) return sys_error("pool: fork");
  if (pid == 0) {
    rd.reset();
    umask(launch_umask);  // mount points get the modes a cold start's set-up gives them
    std::string err = attach_in_child(init_pid, ops, tmpfs_size, inner_uid, inner_gid);
    if (!err.empty() && write(wr.get(), err.data(), err.size()) < 0) _exit(2);
    _exit(err.empty() ? 0 : 1);
  }
  wr.reset();
  std::string err;
  char buf[512];
  for (ssize_t n; (n = read(rd.get(), buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    err.append(buf, static_cast<size_t>(n));
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!err.empty()) return Error{"pool: attach", 0, err, {}, kExitSetup};
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return Error{"pool: attach", 0, "child failed", {}, kExitSetup};
  return ok();
}

}  // namespace ik::pool
