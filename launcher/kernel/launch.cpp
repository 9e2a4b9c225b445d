#include "kernel/launch.hpp"

#include <algorithm>

#include "common/paths.hpp"

namespace ik {

std::string find_connection_file(const std::vector<std::string>& argv) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    for (const char* flag : {"-f", "--f", "--connection-file", "--existing"}) {
      std::string f = flag;
      if (a == f && i + 1 < argv.size()) return argv[i + 1];
      if (a.rfind(f + "=", 0) == 0) return a.substr(f.size() + 1);
    }
  }
  return {};
}

void drop_connection_file_mounts(Options& opts, const std::string& connection_file, const std::string& cwd,
                                 const std::string& home, const HostFs& fs) {
  const std::string target = absolute_path(connection_file, cwd);
  auto same = [&](const MountEntry& e) {
    auto dest = expand_tilde(e.dest, home, fs);
    return dest && absolute_path(*dest, cwd) == target;
  };
  opts.mounts.erase(std::remove_if(opts.mounts.begin(), opts.mounts.end(), same), opts.mounts.end());
}

namespace {

// A tmpfs only the kernel sees, mode 0700, owned by the sandbox's user.
MountOp private_tmpfs(const std::string& dest, const char* why) {
  MountOp op{};
  op.kind = OpKind::kTmpfs;
  op.dest = dest;
  op.mode = 0700;
  op.owned = true;
  op.why = why;
  return op;
}

}  // namespace

std::vector<MountOp> kernel_ops(const std::string& connection_file, const std::string& content, bool runtime_dir,
                                const std::string& cwd) {
  std::vector<MountOp> ops;
  const std::string dir = connection_file.substr(0, connection_file.rfind('/'));
  if (!dir.empty() && !path_is_within(cwd, dir)) {
    ops.push_back(private_tmpfs(dir, "hide the other connection files"));
  }
  if (runtime_dir) {
    ops.push_back(private_tmpfs(kKernelRuntimeDir, "kernel ipc sockets"));
  }
  // ipykernel rewrites its connection file at start-up: a read-only file
  // kills it with EROFS, and it must never write the host's copy. In the
  // private tmpfs that hides its directory it is written straight in (no
  // bind); in the working directory it is bound over the host's.
  MountOp file{};
  file.kind = OpKind::kFile;
  file.dest = connection_file;
  file.content = content;
  file.mode = 0600;
  file.readonly = false;
  file.why = "kernel connection file (private copy)";
  ops.push_back(file);
  return ops;
}

}  // namespace ik
