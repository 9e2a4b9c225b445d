#include "kernelspec/plan_preview.hpp"

#include "kernel/launch.hpp"
#include "kernelspec/spec_read.hpp"
#include "common/paths.hpp"
#include "plan/planner.hpp"

namespace ik {

Result<Plan> preview_plan(const nlohmann::json& spec, const std::string& resource_dir, const HostInfo& host,
                          const std::string& runtime_dir) {
  const std::string conn = runtime_dir + "/kernel-EXAMPLE.json";
  auto settings = kernelspec_settings(spec, resource_dir, conn);
  if (!settings) return settings.error();
  Options opts = settings->opts;
  opts.argv = settings->kernel_argv;  // {connection_file} already replaced by conn
  drop_connection_file_mounts(opts, conn, host.cwd, host.home, *host.fs);
  return build_plan(opts, host, kernel_ops(conn, "{}", opts.net == NetMode::kNone, host.cwd));
}

}  // namespace ik
