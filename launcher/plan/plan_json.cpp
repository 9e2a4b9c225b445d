#include "plan/plan.hpp"

#include "parse/config.hpp"

namespace ik {

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::kTmpfs: return "tmpfs";
    case OpKind::kBind: return "bind";
    case OpKind::kDir: return "dir";
    case OpKind::kSymlink: return "symlink";
    case OpKind::kFile: return "file";
    case OpKind::kEmpty: return "empty-file";
    case OpKind::kProc: return "proc";
    case OpKind::kDev: return "dev";
  }
  return "?";
}

nlohmann::json plan_to_json(const Plan& plan) {
  using nlohmann::json;
  json ops = json::array();
  for (const auto& op : plan.ops) {
    json j{{"op", op_kind_name(op.kind)}, {"dest", op.dest}, {"why", op.why}};
    if (op.kind == OpKind::kBind) {
      j["src"] = op.src;
      j["type"] = op.src_is_dir ? "dir" : "file";
    }
    if (op.kind == OpKind::kSymlink) j["target"] = op.src;
    if (op.kind == OpKind::kBind || op.kind == OpKind::kFile || op.kind == OpKind::kEmpty)
      j["access"] = op.readonly ? "ro" : "rw";
    // A sealed dir: read-only with everything below it once built.
    if (op.kind == OpKind::kDir && op.readonly) j["access"] = "ro (sealed, with everything below)";
    if (op.kind == OpKind::kFile) j["bytes"] = op.content.size();
    // How a file gets there: written into the tmpfs holding it, or bound.
    if (op.kind == OpKind::kFile || op.kind == OpKind::kEmpty) j["how"] = op.in_place ? "write" : "bind";
    ops.push_back(j);
  }
  json limits = limits_to_json(plan.limits);
  json mechanisms = json::object();
  for (const auto& u : plan.limit_uses) mechanisms[u.option.substr(2)] = u.via;
  json cgroup{{"use", plan.cgroup.use}, {"why", plan.cgroup.why}};
  if (plan.cgroup.use) {
    cgroup["dir"] = plan.cgroup.dir();
    cgroup["enable"] = plan.cgroup.enable;
    if (!plan.cgroup.leaf.empty()) cgroup["launcher_leaf"] = plan.cgroup.parent + "/" + plan.cgroup.leaf;
    json files = json::object();
    for (const auto& f : plan.cgroup.files) files[f.name] = f.value;
    cgroup["files"] = files;
  }
  if (plan.rlimit_fallback) {
    // What enforces each limit if the cgroup cannot be created at start.
    json fallback = json::object();
    for (const auto& u : plan.rlimit_fallback->uses) fallback[u.option.substr(2)] = u.via;
    cgroup["fallback_limit_mechanisms"] = fallback;
  }
  json terminal{{"mode", plan.terminal.pty ? "pty" : "inherit"}};
  if (plan.terminal.pty) terminal["stderr"] = plan.terminal.stderr_to_pty ? "pty" : "inherit";
  if (!plan.terminal.why.empty()) terminal["why"] = plan.terminal.why;
  // Map lines as the kernel shows them: "inner outer count".
  const auto map_lines = [](const std::vector<IdExtent>& map) {
    json lines = json::array();
    for (const auto& e : map)
      lines.push_back(std::to_string(e.inner) + " " + std::to_string(e.outer) + " " + std::to_string(e.count));
    return lines;
  };
  return json{
      {"identity",
       {{"outer_uid", plan.id.outer_uid},
        {"outer_gid", plan.id.outer_gid},
        {"uid", plan.id.inner_uid},
        {"gid", plan.id.inner_gid},
        {"user", plan.id.user},
        {"home", plan.id.home},
        {"uid_map", map_lines(plan.id.maps.uid_map)},
        {"gid_map", map_lines(plan.id.maps.gid_map)}}},
      {"namespaces", plan.new_net ? json{"user", "mount", "pid", "ipc", "uts", "net", "cgroup"}
                                  : json{"user", "mount", "pid", "ipc", "uts", "cgroup"}},
      {"network", plan.new_net ? "none (lo only)" : "shared with host"},
      {"hostname", plan.hostname},
      {"build_dir", plan.build_dir},
      {"tmpfs_size", plan.tmpfs_size},
      {"cwd", plan.cwd},
      {"argv", plan.argv},
      {"env", plan.env},
      {"limits", limits},
      {"limit_mechanisms", mechanisms},
      {"cgroup", cgroup},
      {"seccomp", plan.seccomp ? "default" : "off"},
      {"allow_userns", plan.allow_userns},
      {"terminal", terminal},
      {"mounts", ops},
  };
}

}  // namespace ik
