// Kernel launch helpers shared by the launcher and `isolated-kernel`:
// where the connection file is, and the extra plan ops that give the kernel
// its private connection file and runtime directory.
#pragma once
#include <string>
#include <vector>

#include "common/host_fs.hpp"
#include "parse/options.hpp"
#include "plan/plan.hpp"

namespace ik {

// Inside the sandbox: private directory for the kernel's ipc sockets.
inline constexpr const char* kKernelRuntimeDir = "/run/isolated-kernel";
inline constexpr const char* kKernelIpcBase = "/run/isolated-kernel/kernel";

// The connection file named in a kernel argv: "-f X", "-f=X", "--f=X",
// "--connection-file X", "--connection-file=X". Empty when absent.
std::string find_connection_file(const std::vector<std::string>& kernel_argv);

// Drops user mount entries of the connection file itself (isolate.sh
// kernelspecs mounted "{connection_file}"): the kernel gets a private copy.
// `fs` answers ~user in the entries.
void drop_connection_file_mounts(Options& opts, const std::string& connection_file, const std::string& cwd,
                                 const std::string& home, const HostFs& fs);

// The ops that give the kernel a writable private copy of its connection
// file (mode 0600, at the same path) in an otherwise empty directory, so
// the other kernels' connection files (and the server's token files) next
// to it stay hidden, and, when `runtime_dir`, a private tmpfs for the ipc
// sockets. The directory is left alone when it holds the kernel's `cwd`.
std::vector<MountOp> kernel_ops(const std::string& connection_file, const std::string& content, bool runtime_dir,
                                const std::string& cwd);

}  // namespace ik
