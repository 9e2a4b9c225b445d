#include "pool/split.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "kernel/launch.hpp"

namespace ik::pool {

std::vector<MountOp> waiting_extra_ops() {
  MountOp op{};
  op.kind = OpKind::kTmpfs;
  op.dest = kKernelRuntimeDir;
  op.mode = 0700;
  op.owned = true;
  op.why = "kernel ipc sockets";
  return {op};
}

void strip_launch_parts(Plan& plan, const std::string& cwd_real) {
  std::erase_if(plan.ops, [&](const MountOp& op) { return op.kind == OpKind::kBind && op.src == cwd_real; });
  plan.cwd.clear();
  plan.cwd_explicit = false;
}

nlohmann::json op_to_json(const MountOp& op) {
  return {{"kind", op_kind_name(op.kind)},
          {"dest", op.dest},
          {"src", op.src},
          {"content", op.content},
          {"readonly", op.readonly},
          {"in_place", op.in_place},
          {"src_is_dir", op.src_is_dir},
          {"owned", op.owned},
          {"point_on_host", op.point_on_host},
          {"mode", op.mode},
          {"why", op.why}};
}

Result<MountOp> op_from_json(const nlohmann::json& j) {
  try {
    MountOp op{};
    const std::string kind = j.at("kind").get<std::string>();
    if (kind == op_kind_name(OpKind::kTmpfs)) op.kind = OpKind::kTmpfs;
    else if (kind == op_kind_name(OpKind::kBind)) op.kind = OpKind::kBind;
    else if (kind == op_kind_name(OpKind::kFile)) op.kind = OpKind::kFile;
    else
      return Error{"pool: launch op", 0, "kind '" + kind + "' cannot be attached to a waiting sandbox", {}, kExitSetup};
    op.dest = j.at("dest").get<std::string>();
    op.src = j.at("src").get<std::string>();
    op.content = j.at("content").get<std::string>();
    op.readonly = j.at("readonly").get<bool>();
    op.in_place = j.at("in_place").get<bool>();
    op.src_is_dir = j.at("src_is_dir").get<bool>();
    op.owned = j.at("owned").get<bool>();
    op.point_on_host = j.at("point_on_host").get<bool>();
    op.mode = j.at("mode").get<unsigned>();
    op.why = j.at("why").get<std::string>();
    return op;
  } catch (const std::exception& e) {
    return Error{"pool: launch op", 0, e.what(), {}, kExitSetup};
  }
}

Result<std::vector<MountOp>> launch_ops(const Plan& full, const Plan& waiting) {
  std::vector<MountOp> extra;
  size_t w = 0;
  for (const auto& op : full.ops) {
    if (w < waiting.ops.size() && op_to_json(op) == op_to_json(waiting.ops[w])) {
      ++w;
      continue;
    }
    extra.push_back(op);
  }
  if (w != waiting.ops.size())
    return Error{"pool: not poolable",
                 0,
                 "the waiting sandbox would differ from a cold one at " + waiting.ops[w].dest,
                 {},
                 kExitSetup};
  for (const auto& op : extra) {
    const bool supported = op.kind == OpKind::kTmpfs || (op.kind == OpKind::kBind && op.src_is_dir) ||
                           (op.kind == OpKind::kFile && op.in_place);
    if (!supported)
      return Error{"pool: not poolable",
                   0,
                   std::string("launch-time ") + op_kind_name(op.kind) + " at " + op.dest + " cannot be attached later",
                   {},
                   kExitSetup};
  }
  return extra;
}

std::vector<std::string> argv_template(const std::vector<std::string>& argv, const std::string& conn_path) {
  std::vector<std::string> out;
  for (std::string a : argv) {
    if (!conn_path.empty())
      for (size_t p = a.find(conn_path); p != std::string::npos; p = a.find(conn_path, p + 1))
        a.replace(p, conn_path.size(), kConnectionPlaceholder);
    out.push_back(a);
  }
  return out;
}

bool launch_time_env(const std::string& name) {
  return name.rfind("JPY_", 0) == 0 || name == "PWD" || name == "OLDPWD" || name == "_" || name == "SHLVL";
}

namespace {

std::string mtime_of(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return "missing";
  return std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ino);
}

// The interpreter the kernel argv names, looked up on the plan's PATH.
std::string interpreter_path(const Plan& plan) {
  if (plan.argv.empty()) return {};
  const std::string& prog = plan.argv[0];
  if (prog.find('/') != std::string::npos) return prog;
  for (const auto& kv : plan.env) {
    if (kv.rfind("PATH=", 0) != 0) continue;
    std::stringstream dirs(kv.substr(5));
    for (std::string d; std::getline(dirs, d, ':');)
      if (access((d + "/" + prog).c_str(), X_OK) == 0) return d + "/" + prog;
  }
  return prog;
}

}  // namespace

std::string pool_key(const Plan& waiting, const std::string& waiter, const std::vector<std::string>& preload) {
  nlohmann::json j = plan_to_json(waiting);
  j.erase("cwd");
  nlohmann::json ops = nlohmann::json::array();
  for (const auto& op : waiting.ops) ops.push_back(op_to_json(op));
  j["mounts"] = ops;  // every field, not only what --print-plan shows
  nlohmann::json env = nlohmann::json::array();
  for (const auto& kv : waiting.env)
    if (!launch_time_env(kv.substr(0, kv.find('=')))) env.push_back(kv);
  j["env"] = env;
  const std::string interp = interpreter_path(waiting);
  j["key_extra"] = {{"version", IK_VERSION},
                    {"interpreter", interp},
                    {"interpreter_mtime", mtime_of(interp)},
                    {"launcher_mtime", mtime_of("/proc/self/exe")},
                    {"waiter", waiter},
                    {"preload", preload}};
  // The text itself, not a digest of it: compared for equality only, and
  // hashing it would make the claiming launcher dlopen libcrypto (~1 ms of
  // its ~5 ms of CPU, bench/analysis.md 7c) for nothing else.
  return j.dump();
}

Result<std::string> waiter_source() {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  std::vector<std::string> candidates;
  if (n > 0) {
    std::string dir(exe, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    candidates.push_back(dir + "/../share/pool/pool_waiter.py");  // a build tree next to the sources
  }
  candidates.push_back(std::string(IK_DATADIR) + "/pool_waiter.py");
  for (const auto& c : candidates) {
    std::ifstream in(c);
    if (!in) continue;
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  return Error{"pool: waiter", 0, "pool_waiter.py not found in " + candidates.back(), "reinstall isolated-kernel",
               kExitSetup};
}

}  // namespace ik::pool
