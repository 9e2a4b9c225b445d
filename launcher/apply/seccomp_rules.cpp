// The default filter's rules, compiled by libseccomp. Also linked into
// ik-seccomp-gen, which turns them into BPF at build time (seccomp.cpp).
#include <fcntl.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>

#include "apply/seccomp.hpp"
#include "common/fd.hpp"

namespace ik {
namespace {

using FilterPtr = std::unique_ptr<void, void (*)(scmp_filter_ctx)>;

Status deny(scmp_filter_ctx ctx, const char* name, unsigned count = 0, const scmp_arg_cmp* args = nullptr,
            int err = EPERM) {
  int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return ok();  // not on this architecture
  int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(static_cast<unsigned>(err)), nr, count, args);
  if (rc != 0) return sys_error(std::string("seccomp: rule for ") + name, -rc);
  return ok();
}

// Matches only the low 32 bits: the kernel ignores the upper half of an ioctl
// request, and a full 64-bit compare was bypassed that way (snapd, 2019).
Status deny_ioctl(scmp_filter_ctx ctx, unsigned long request) {
  scmp_arg_cmp cmp = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, request);
  return deny(ctx, "ioctl", 1, &cmp);
}

Status deny_flag(scmp_filter_ctx ctx, const char* name, unsigned arg, std::uint64_t flag) {
  scmp_arg_cmp cmp{arg, SCMP_CMP_MASKED_EQ, flag, flag};
  return deny(ctx, name, 1, &cmp);
}

Result<FilterPtr> build_filter(const SeccompPolicy& policy) {
  FilterPtr ctx(seccomp_init(SCMP_ACT_ALLOW), seccomp_release);
  if (!ctx) return sys_error("seccomp: init", ENOMEM);
  // Syscalls from another ABI (int 0x80 on x86_64) hit the bad-arch action:
  // kill, so they cannot dodge the rules below.
  for (const auto& name : denied_syscalls()) IK_TRY(deny(ctx.get(), name.c_str()));
  IK_TRY(deny_ioctl(ctx.get(), TIOCSTI));    // typing into the terminal (CVE-2017-5226)
  IK_TRY(deny_ioctl(ctx.get(), TIOCLINUX));  // console selection tricks
  // Personalities that weaken the address space. Bit 31 is in the mask so
  // that the query personality(0xffffffff) (all bits set) stays allowed;
  // no real persona sets bit 31.
  for (std::uint64_t flag : {ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ADDR_COMPAT_LAYOUT, MMAP_PAGE_ZERO}) {
    scmp_arg_cmp cmp{0, SCMP_CMP_MASKED_EQ, flag | 0x80000000u, flag};
    IK_TRY(deny(ctx.get(), "personality", 1, &cmp));
  }
  // vsock is not covered by the network namespace.
  scmp_arg_cmp vsock = SCMP_A0(SCMP_CMP_EQ, AF_VSOCK);
  IK_TRY(deny(ctx.get(), "socket", 1, &vsock, EAFNOSUPPORT));
  if (!policy.allow_userns) {
    IK_TRY(deny_flag(ctx.get(), "unshare", 0, CLONE_NEWUSER));
    IK_TRY(deny_flag(ctx.get(), "clone", 0, CLONE_NEWUSER));
    // clone3 passes flags in memory the filter cannot read: ENOSYS makes
    // glibc fall back to clone, which is filtered above.
    IK_TRY(deny(ctx.get(), "clone3", 0, nullptr, ENOSYS));
  }
  return ctx;
}

}  // namespace

Result<std::vector<sock_filter>> compile_seccomp_filter(const SeccompPolicy& policy) {
  auto ctx = build_filter(policy);
  if (!ctx) return ctx.error();
  // libseccomp 2.5 exports only to a file descriptor.
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return sys_error("seccomp: pipe");
  UniqueFd rd(p[0]), wr(p[1]);
  int rc = seccomp_export_bpf(ctx->get(), wr.get());
  if (rc != 0) return sys_error("seccomp: export the filter", -rc);
  wr.reset();
  std::vector<sock_filter> prog;
  sock_filter insn;
  for (;;) {
    ssize_t n = read(rd.get(), &insn, sizeof insn);
    if (n == 0) break;
    if (n != static_cast<ssize_t>(sizeof insn)) return sys_error("seccomp: read the exported filter", EIO);
    prog.push_back(insn);
  }
  return prog;
}

Status load_seccomp_filter_libseccomp(const SeccompPolicy& policy) {
  auto ctx = build_filter(policy);
  if (!ctx) return ctx.error();
  int rc = seccomp_load(ctx->get());
  if (rc != 0) return sys_error("seccomp: load filter", -rc, "try --seccomp=off to debug");
  return ok();
}

}  // namespace ik
