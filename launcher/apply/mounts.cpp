#include "apply/mounts.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>

#include "apply/pid_order.hpp"
#include "common/fd.hpp"
#include "common/file_io.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"

namespace ik {
namespace {

// Layout of the scratch tmpfs we pivot into first. It lives only in our own
// mount namespace, so nothing is ever created on the host.
constexpr const char* kNewRoot = "/newroot";
constexpr const char* kOldRoot = "/oldroot";  // the host's root during set-up
constexpr const char* kFiles = "/files";      // synthesized files to be bound (created when needed)

std::string inside(const std::string& dest) { return dest == "/" ? kNewRoot : kNewRoot + dest; }
std::string on_host(const std::string& src) { return kOldRoot + src; }

// A path of the set-up's own layout as the user knows it, for messages:
// /newroot/X is X inside the sandbox, /oldroot/X is X on the host. No
// message ever names /newroot, /oldroot or /files.
std::string shown(const std::string& path) {
  const auto strip = [&](const char* prefix) -> std::optional<std::string> {
    const std::string p = prefix;
    if (path == p) return std::string("/");
    if (path.compare(0, p.size() + 1, p + "/") == 0) return path.substr(p.size());
    return std::nullopt;
  };
  if (auto in = strip(kNewRoot)) return *in;
  if (auto host = strip(kOldRoot)) return *host + " on the host";
  if (strip(kFiles)) return "a staged copy";
  return path;
}

Status do_mount(const char* src, const std::string& dst, const char* type, unsigned long flags, const std::string& data,
                const std::string& step) {
  if (mount(src, dst.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) != 0) {
    int e = errno;
    std::string hint;
    if (e == ENOSPC) hint = "too many mounts: raise fs.mount-max";
    return sys_error(step, e, hint);
  }
  return ok();
}

std::string tmpfs_data(unsigned mode, std::uint64_t size) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "mode=%o,size=%llu", mode, static_cast<unsigned long long>(size));
  return buf;
}

// mkdir -p below the new root. The planner has checked that no component
// would have to be created inside a host bind. Tries the whole path first:
// usually only the last component is missing.
Status make_dirs(const std::string& path, unsigned mode) {
  if (mkdir(path.c_str(), mode) == 0 || errno == EEXIST) return ok();
  if (errno != ENOENT) return sys_error("mkdir " + shown(path));
  auto slash = path.rfind('/');
  if (slash != 0 && slash != std::string::npos) IK_TRY(make_dirs(path.substr(0, slash), 0755));
  if (mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return sys_error("mkdir " + shown(path));
  return ok();
}

Status make_parent_dirs(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == 0 || slash == std::string::npos) return ok();
  return make_dirs(path.substr(0, slash), 0755);
}

// A mount point of the right type: a directory for a directory, an empty
// file for a file (binding a file over a directory fails with ENOTDIR).
Status make_mount_point(const std::string& path, bool is_dir) {
  if (is_dir) return make_dirs(path, 0755);
  for (int attempt = 0;; ++attempt) {
    // mknod of a regular file: one syscall and no fd to close (no CAP_MKNOD
    // needed for S_IFREG); never follows a symlink at `path`.
    if (mknod(path.c_str(), S_IFREG | 0444, 0) == 0 || errno == EEXIST) return ok();
    if (errno != ENOENT || attempt > 0) return sys_error("create the mount point " + shown(path));
    IK_TRY(make_parent_dirs(path));
  }
}

// The mount point of `op` at `path`. Inside a host bind (op.point_on_host)
// it exists on the host, the planner checked: never create it there, where
// set-up may hold more than the caller's rights (root's full id map).
Status mount_point_for(const MountOp& op, const std::string& path, bool is_dir) {
  if (!op.point_on_host) return make_mount_point(path, is_dir);
  struct stat st;
  if (stat(path.c_str(), &st) == 0) return ok();
  return sys_error("find the mount point " + shown(path), errno,
                   errno == ENOENT ? "it was removed on the host during set-up" : "");
}

// The umask, read once (reading it means setting it).
mode_t current_umask() {
  static const mode_t mask = [] {
    mode_t m = umask(022);
    umask(m);
    return m;
  }();
  return mask;
}

// Creates `path` in a tmpfs we are building, with exactly `mode`, or empties
// an existing file (a later op replacing an earlier one). O_NOFOLLOW: never
// through a symlink at the destination. Parents are created when missing.
Result<UniqueFd> create_file(const std::string& path, unsigned mode) {
  for (int attempt = 0;; ++attempt) {
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
    bool fix_mode = (mode & current_umask()) != 0;
    if (!fd.valid() && errno == EEXIST) {
      fd.reset(open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW));
      fix_mode = true;  // an existing file keeps its mode
    }
    if (fd.valid()) {
      if (fix_mode && fchmod(fd.get(), mode) != 0) return sys_error("chmod " + shown(path));
      return fd;
    }
    if (errno != ENOENT || attempt > 0) return sys_error("create " + shown(path));
    IK_TRY(make_parent_dirs(path));
  }
}

Status create_with_content(const std::string& path, const std::string& content, unsigned mode) {
  auto fd = create_file(path, mode);
  if (!fd) return fd.error();
  if (int e = write_all(fd->get(), content.data(), content.size()); e != 0) return sys_error("write " + shown(path), e);
  return ok();
}

// EACCES/EPERM reaching `path` during set-up: set-up runs as the caller's
// uid in the sandbox's user namespace, so it searches directories as the
// caller (root: as root only when its ids are all mapped, see plan/ids.cpp).
Error unreachable(Error e, const std::string& path, const Plan& plan) {
  if (!e.hint.empty() || (e.err != EACCES && e.err != EPERM)) return e;
  if (plan.id.maps.full)
    e.hint = shown(path) + " is out of root's reach too (another user's FUSE mount, NFS with root_squash?)";
  else if (geteuid() == 0)
    e.hint = "a directory on the way to " + shown(path) +
             " cannot be searched from the sandbox: without CAP_SETUID and CAP_SETGID it maps only root's own "
             "ids, which do not own that directory";
  else
    e.hint = "a directory on the way to " + shown(path) +
             " is not searchable by you: make it searchable "
             "or mount another directory";
  return e;
}

// Bind `src` (a path in the current tree) at `dst`, the place of `op`, then
// add attributes.
Status bind_at(const MountOp& op, const Plan& plan, const std::string& src, const std::string& dst, bool is_dir,
               unsigned attrs, const std::string& step) {
  if (Status s = mount_point_for(op, dst, is_dir); !s) return unreachable(s.error(), dst, plan);
  // Always MS_REC: inside a user namespace a non-recursive bind of a tree
  // with locked submounts fails with EINVAL (and would uncover what they hide).
  // The mount point was just reached, so a refusal here is about the source.
  if (Status s = do_mount(src.c_str(), dst, nullptr, MS_BIND | MS_REC, {}, step); !s)
    return unreachable(s.error(), src, plan);
  if (attrs == 0) return ok();
  Status s = add_mount_attrs(dst, attrs, /*recursive=*/true);
  if (!s) {
    Error e = s.error();
    e.step = step + ": " + e.step;
    return e;
  }
  return ok();
}

Status apply_tmpfs(const MountOp& op, const Plan& plan) {
  std::string dst = inside(op.dest);
  if (Status s = mount_point_for(op, dst, true); !s) return unreachable(s.error(), dst, plan);
  std::string data = tmpfs_data(op.mode, plan.tmpfs_size);
  if (op.owned) data += ",uid=" + std::to_string(plan.id.inner_uid) + ",gid=" + std::to_string(plan.id.inner_gid);
  log::step("tmpfs %s (%s) %s", op.dest.c_str(), op.why.c_str(), data.c_str());
  return do_mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, data, "tmpfs " + op.dest + " (" + op.why + ")");
}

// The planner's sealed dirs (kDir with readonly): binds below them get their
// attributes from the seal at the end of build_root_and_pivot().
bool under_seal(const MountOp& op, const Plan& plan) {
  for (const auto& d : plan.ops)
    if (d.kind == OpKind::kDir && d.readonly && path_is_within(op.dest, d.dest)) return true;
  return false;
}

Status apply_bind(const MountOp& op, const Plan& plan) {
  log::step("bind %s -> %s %s (%s)", op.src.c_str(), op.dest.c_str(), op.readonly ? "ro" : "rw", op.why.c_str());
  unsigned attrs = under_seal(op, plan) ? 0u : kAttrNoSuid | kAttrNoDev | (op.readonly ? kAttrReadOnly : 0u);
  return bind_at(op, plan, on_host(op.src), inside(op.dest), op.src_is_dir, attrs,
                 "bind " + op.src + " at " + op.dest + " (" + op.why + ")");
}

Status apply_file(const MountOp& op, int index, const std::string& content, unsigned mode, const Plan& plan) {
  log::step("file %s (%zu bytes, %s, %s, %s)", op.dest.c_str(), content.size(), op.readonly ? "ro" : "rw",
            op.in_place ? "written" : "bound", op.why.c_str());
  const std::string step = "file " + op.dest + " (" + op.why + ")";
  if (op.in_place) {
    // Straight into the tmpfs that holds it; the planner chose this only when
    // that tmpfs gives the file its access (the root becomes read-only).
    Status s = create_with_content(inside(op.dest), content, mode);
    if (!s) {
      Error e = s.error();
      e.step = step + ": " + e.step;
      return e;
    }
    return ok();
  }
  // /files is the staging area in the scratch tmpfs (never visible inside).
  if (mkdir(kFiles, 0700) != 0 && errno != EEXIST) return sys_error(step + ": make the staging directory");
  std::string scratch = std::string(kFiles) + "/" + std::to_string(index);
  IK_TRY(create_with_content(scratch, content, mode));
  unsigned attrs = under_seal(op, plan) ? 0u : kAttrNoSuid | kAttrNoDev | (op.readonly ? kAttrReadOnly : 0u);
  return bind_at(op, plan, scratch, inside(op.dest), false, attrs, step);
}

Status apply_symlink(const MountOp& op) {
  std::string dst = inside(op.dest);
  log::step("symlink %s -> %s", op.dest.c_str(), op.src.c_str());
  // The parents only when missing: most links (/bin, /lib, ...) sit in the
  // root, which exists; a mkdir that fails with EEXIST is a syscall a link.
  for (int attempt = 0;; ++attempt) {
    if (symlink(op.src.c_str(), dst.c_str()) == 0 || errno == EEXIST) return ok();
    if (errno != ENOENT || attempt > 0) return sys_error("symlink " + op.dest);
    IK_TRY(make_parent_dirs(dst));
  }
}

// Fresh procfs for our pid namespace, mounted while the host's /proc is still
// visible under /oldroot (the kernel requires a fully visible procfs in the
// mount namespace to allow it). Then the writable kernel knobs go read-only.
Status apply_proc(const MountOp& op) {
  std::string dst = inside(op.dest);
  IK_TRY(make_dirs(dst, 0555));
  log::step("proc %s", op.dest.c_str());
  Status s = do_mount("proc", dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, {}, "mount proc at " + op.dest);
  if (!s) {
    Error e = s.error();
    if (e.err == EPERM)
      e.hint = "the host's /proc has paths mounted over it (typical in containers): procfs cannot be "
               "mounted in a new pid namespace here; run on the host or with an unmasked /proc";
    return e;
  }
  keep_ns_last_pid(dst);  // before sys/ goes read-only (apply/pid_order.hpp)
  for (const char* sub : {"sys", "sysrq-trigger", "irq", "bus", "fs"}) {
    std::string p = dst + "/" + sub;
    // Absent on some kernels (no sysrq, say): ENOENT, nothing to cover.
    if (mount(p.c_str(), p.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
      if (errno == ENOENT) continue;
      return sys_error("bind /proc/" + std::string(sub));
    }
    IK_TRY(add_mount_attrs(p, kAttrReadOnly | kAttrNoSuid | kAttrNoDev, true));
  }
  return ok();
}

// A minimal /dev: a few host nodes bound onto empty files (mknod is denied in
// a user namespace), a private devpts, /dev/shm and the usual links.
Status apply_dev(const MountOp& op, const Plan& plan) {
  std::string dev = inside(op.dest);
  IK_TRY(make_dirs(dev, 0755));
  log::step("dev %s (null zero full random urandom tty, pts, shm)", op.dest.c_str());
  IK_TRY(do_mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, tmpfs_data(0755, 1 << 20), "tmpfs /dev"));
  for (const char* node : {"null", "zero", "full", "random", "urandom", "tty"}) {
    const std::string src = on_host(std::string("/dev/") + node);
    const std::string dst = dev + "/" + node;
    IK_TRY(make_mount_point(dst, false));
    // No nodev here: these binds exist to be opened as devices. No nosuid
    // either: it would cost a mount_setattr each and means nothing on a
    // device node, which execve() refuses whatever its mount flags.
    if (mount(src.c_str(), dst.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
      if (errno != ENOENT) return sys_error(std::string("bind /dev/") + node);
      unlink(dst.c_str());  // not on this host: no empty file in its place
    }
  }
  const struct {
    const char* name;
    const char* target;
  } links[] = {{"fd", "/proc/self/fd"},
               {"stdin", "/proc/self/fd/0"},
               {"stdout", "/proc/self/fd/1"},
               {"stderr", "/proc/self/fd/2"},
               {"ptmx", "pts/ptmx"}};
  for (const auto& l : links)
    if (symlink(l.target, (dev + "/" + l.name).c_str()) != 0) return sys_error(std::string("symlink /dev/") + l.name);
  IK_TRY(make_dirs(dev + "/pts", 0755));
  IK_TRY(do_mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620",
                  "mount devpts"));
  IK_TRY(make_dirs(dev + "/shm", 0755));
  IK_TRY(do_mount("tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV, tmpfs_data(01777, plan.tmpfs_size),
                  "tmpfs /dev/shm"));
  return ok();
}

// What an op is, in the words of the plan (--print-plan, -v): the host path
// and, in `why`, the --mnt entry as the user typed it.
std::string op_title(const MountOp& op) {
  const std::string why = op.why.empty() ? "" : " (" + op.why + ")";
  switch (op.kind) {
    case OpKind::kBind: return "bind " + op.src + " at " + op.dest + why;
    case OpKind::kTmpfs: return "tmpfs " + op.dest + why;
    case OpKind::kFile:
    case OpKind::kEmpty: return "file " + op.dest + why;
    default: return std::string(op_kind_name(op.kind)) + " " + op.dest + why;
  }
}

// Every failure of an op names the op (so the host path the user gave),
// then what failed, in sandbox or host paths.
Error in_context(const MountOp& op, Error e) {
  const std::string title = op_title(op);
  if (e.step.compare(0, title.size(), title) != 0) e.step = title + ": " + e.step;
  return e;
}

Status apply_op(const MountOp& op, int index, const Plan& plan) {
  switch (op.kind) {
    case OpKind::kTmpfs: return apply_tmpfs(op, plan);
    case OpKind::kBind: return apply_bind(op, plan);
    case OpKind::kDir:
      log::step("dir %s%s", op.dest.c_str(), op.readonly ? " (sealed read-only once built)" : "");
      IK_TRY(make_dirs(inside(op.dest), op.mode));
      // Sealed: a mount of its own, so that one recursive mount_setattr at
      // the end covers it and every bind below it.
      if (op.readonly)
        return do_mount(inside(op.dest).c_str(), inside(op.dest), nullptr, MS_BIND | MS_REC, {},
                        "bind " + op.dest + " onto itself");
      return ok();
    case OpKind::kSymlink: return apply_symlink(op);
    case OpKind::kFile: return apply_file(op, index, op.content, op.mode, plan);
    case OpKind::kEmpty: return apply_file(op, index, "", 0444, plan);
    case OpKind::kProc: return apply_proc(op);
    case OpKind::kDev: return apply_dev(op, plan);
  }
  return ok();
}

// pivot_root(new, put_old) then chdir("/"). pivot_root needs `dir` to be a
// mount point and no shared mounts around it (we made everything private).
Status pivot_into(const std::string& dir, const std::string& put_old, const std::string& what) {
  if (chdir(dir.c_str()) != 0) return sys_error("chdir into " + what);
  if (syscall(SYS_pivot_root, ".", put_old.c_str()) != 0) return sys_error("pivot_root into " + what);
  if (chdir("/") != 0) return sys_error("chdir /");
  return ok();
}

Status prepare_scratch(const Plan& plan) {
  // Before any other mount: make every mount private, so nothing we do
  // propagates to the host (systemd makes / shared).
  IK_TRY(do_mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, {}, "make / private"));
  IK_TRY(do_mount("tmpfs", plan.build_dir, "tmpfs", MS_NOSUID | MS_NODEV, tmpfs_data(0755, plan.tmpfs_size),
                  "tmpfs at -b " + plan.build_dir));
  for (const char* d : {kNewRoot, kOldRoot})
    if (mkdir((plan.build_dir + d).c_str(), 0755) != 0) return sys_error("mkdir " + plan.build_dir + d);
  // The host root goes to /oldroot: sources are read from there, so even a
  // source under the -b directory stays reachable.
  return pivot_into(plan.build_dir, plan.build_dir + kOldRoot, "the scratch tmpfs at -b " + plan.build_dir);
}

// Final pivot into /newroot and detach everything else (host tree included).
// Never chroot: with capabilities in the namespace a chroot is escapable.
Status switch_root() {
  IK_TRY(pivot_into(kNewRoot, kNewRoot, "the new root"));
  // pivot_root(".", ".") stacks the old root on top of the new one; detach it.
  if (umount2("/", MNT_DETACH) != 0) return sys_error("detach the old root");
  if (chdir("/") != 0) return sys_error("chdir /");
  return ok();
}

// Makes each sealed dir read-only, nosuid, nodev with every mount below it.
// Before Linux 5.12 (no mount_setattr) the fallback remount reaches the top
// mount only, so then every bind below gets its own.
Status seal(const Plan& plan) {
  const unsigned attrs = kAttrReadOnly | kAttrNoSuid | kAttrNoDev;
  for (const auto& d : plan.ops) {
    if (d.kind != OpKind::kDir || !d.readonly) continue;
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if (mount_setattr(AT_FDCWD, inside(d.dest).c_str(), AT_SYMLINK_NOFOLLOW | AT_RECURSIVE, &attr, sizeof attr) == 0)
      continue;
    if (errno != ENOSYS) return sys_error("seal " + d.dest + " read-only");
    IK_TRY(add_mount_attrs(inside(d.dest), attrs, false));
    for (const auto& op : plan.ops)
      if ((op.kind == OpKind::kBind || ((op.kind == OpKind::kFile || op.kind == OpKind::kEmpty) && !op.in_place)) &&
          op.dest != d.dest && path_is_within(op.dest, d.dest))
        IK_TRY(add_mount_attrs(inside(op.dest), attrs, true));
  }
  return ok();
}

}  // namespace

Status add_mount_attrs(const std::string& path, unsigned attrs, bool recursive) {
  struct mount_attr attr {};
  if (attrs & kAttrReadOnly) attr.attr_set |= MOUNT_ATTR_RDONLY;
  if (attrs & kAttrNoSuid) attr.attr_set |= MOUNT_ATTR_NOSUID;
  if (attrs & kAttrNoDev) attr.attr_set |= MOUNT_ATTR_NODEV;
  unsigned flags = AT_SYMLINK_NOFOLLOW | (recursive ? AT_RECURSIVE : 0u);
  if (mount_setattr(AT_FDCWD, path.c_str(), flags, &attr, sizeof attr) == 0) return ok();
  if (errno != ENOSYS) return sys_error("set mount attributes on " + shown(path));
  // Kernels before 5.12: MS_REMOUNT|MS_BIND must repeat the flags the kernel
  // locked on this mount or it fails with EPERM (top mount only).
  struct statvfs sv;
  if (statvfs(path.c_str(), &sv) != 0) return sys_error("statvfs " + shown(path));
  unsigned long flags_old = MS_REMOUNT | MS_BIND;
  if (sv.f_flag & ST_NOEXEC) flags_old |= MS_NOEXEC;
  if ((sv.f_flag & ST_NOSUID) || (attrs & kAttrNoSuid)) flags_old |= MS_NOSUID;
  if ((sv.f_flag & ST_NODEV) || (attrs & kAttrNoDev)) flags_old |= MS_NODEV;
  if ((sv.f_flag & ST_RDONLY) || (attrs & kAttrReadOnly)) flags_old |= MS_RDONLY;
  return do_mount(nullptr, path, nullptr, flags_old, {}, "remount " + shown(path));
}

Status build_root_and_pivot(const Plan& plan) {
  IK_TRY(prepare_scratch(plan));
  int index = 0;
  for (const auto& op : plan.ops) {
    Status s = apply_op(op, index++, plan);
    if (!s) return in_context(op, s.error());
  }
  // The root tmpfs and /dev are complete: make them read-only (the writable
  // places are /tmp, HOME, /dev/shm and rw binds, which are separate mounts).
  IK_TRY(add_mount_attrs(kNewRoot, kAttrReadOnly | kAttrNoSuid | kAttrNoDev, false));
  IK_TRY(seal(plan));
  std::string dev = std::string(kNewRoot) + "/dev";
  if (access(dev.c_str(), F_OK) == 0) IK_TRY(add_mount_attrs(dev, kAttrReadOnly | kAttrNoSuid, false));
  return switch_root();
}

}  // namespace ik
