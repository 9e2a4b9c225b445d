#include "batch/run_plan.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "common/paths.hpp"

namespace ik::batch {
namespace fs = std::filesystem;

namespace {

bool is_notebook_name(const std::string& name) {
  return name.size() > 6 && name.compare(name.size() - 6, 6, ".ipynb") == 0;
}

// PATH relative to DIR when it lies within it, else "".
std::string relative_within(const std::string& path, const std::string& dir) {
  if (!path_is_within(path, dir) || path == dir) return {};
  return dir == "/" ? path.substr(1) : path.substr(dir.size() + 1);
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

}  // namespace

Result<std::pair<unsigned, unsigned>> parse_share(const std::string& text) {
  auto slash = text.find('/');
  auto bad = usage_error("--share " + text + ": expected I/K with 0 <= I < K, e.g. 0/4");
  if (slash == std::string::npos) return bad;
  try {
    size_t a = 0, b = 0;
    unsigned long i = std::stoul(text.substr(0, slash), &a);
    unsigned long k = std::stoul(text.substr(slash + 1), &b);
    if (a != slash || b != text.size() - slash - 1 || k == 0 || i >= k || k > 100000) return bad;
    return std::pair<unsigned, unsigned>{static_cast<unsigned>(i), static_cast<unsigned>(k)};
  } catch (const std::exception&) {
    return bad;
  }
}

Result<std::vector<Found>> discover(const std::vector<std::string>& inputs, const std::string& cwd,
                                    const std::string& skip_dir) {
  std::vector<Found> out;
  for (const auto& arg : inputs) {
    Found f{arg, absolute_path(arg, cwd), false, {}};
    struct stat st {};
    if (::stat(f.path.c_str(), &st) != 0)
      return usage_error(arg + ": " + std::strerror(errno), "give notebooks (.ipynb) or directories that hold them");
    if (S_ISDIR(st.st_mode)) {
      f.is_dir = true;
      std::error_code ec;
      fs::recursive_directory_iterator it(f.path, fs::directory_options::skip_permission_denied, ec), end;
      if (ec) return usage_error(arg + ": cannot list it: " + ec.message());
      for (; it != end; it.increment(ec)) {
        if (ec) break;
        const std::string name = it->path().filename().string();
        const std::string p = it->path().string();
        if (it->is_directory(ec)) {
          // Jupyter's autosaves, and our own output when it lies inside an input.
          if (name == ".ipynb_checkpoints" || (!skip_dir.empty() && path_is_within(p, skip_dir)))
            it.disable_recursion_pending();
          continue;
        }
        if (is_notebook_name(name) && !it->is_directory(ec)) f.notebooks.push_back(normalize_path(p));
      }
      std::sort(f.notebooks.begin(), f.notebooks.end());
    } else {
      if (!is_notebook_name(f.path))
        return usage_error(arg + ": not a notebook (.ipynb)", "give notebooks or directories that hold them");
      f.notebooks.push_back(f.path);
    }
    out.push_back(std::move(f));
  }
  return out;
}

Result<RunPlan> build_run_plan(const RunOptions& options, const std::vector<Found>& found, const std::string& cwd,
                               unsigned cpus) {
  RunPlan plan;
  plan.options = options;
  plan.cwd = cwd;
  plan.output_dir = absolute_path(options.output_dir, cwd);
  plan.report_jsonl = plan.output_dir + "/" +
                      (options.share_count > 1 ? "report.share-" + std::to_string(options.share_index) + "-of-" +
                                                     std::to_string(options.share_count) + ".jsonl"
                                               : std::string("report.jsonl"));
  plan.slots = options.jobs ? options.jobs : std::max(1u, cpus);
  std::set<std::string> seen;
  std::map<std::string, std::string> outputs;  // output -> input
  std::vector<PlannedNotebook> all;
  for (const auto& f : found) {
    if (f.is_dir && f.notebooks.empty()) plan.empty_dirs.push_back(f.arg);
    for (const auto& nb : f.notebooks) {
      if (!seen.insert(nb).second) continue;
      PlannedNotebook p;
      p.input = nb;
      p.workdir = parent_of(nb);
      std::string rel = relative_within(nb, cwd);
      p.name = rel.empty() ? nb : rel;
      if (options.inplace) {
        p.output = nb;
      } else {
        // Mirror the tree as typed: under the current directory its path
        // from there, else from the argument's parent directory.
        if (rel.empty()) rel = relative_within(nb, parent_of(f.is_dir ? f.path : parent_of(f.path)));
        if (rel.empty()) rel = nb.substr(nb.rfind('/') + 1);
        p.output = plan.output_dir + "/" + rel;
        if (p.output == nb)
          return usage_error(p.name + ": its output would overwrite it", "use another --output-dir, or --inplace");
      }
      if (auto [it, fresh] = outputs.emplace(p.output, nb); !fresh)
        return usage_error(nb + " and " + it->second + " would both be written to " + p.output,
                           "run them separately, or from a directory that holds both");
      all.push_back(std::move(p));
    }
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  plan.total_before_share = all.size();
  // Round robin: each share gets a similar mix of the tree.
  for (size_t i = 0; i < all.size(); ++i)
    if (i % options.share_count == options.share_index) plan.notebooks.push_back(std::move(all[i]));
  return plan;
}

nlohmann::json plan_to_json(const RunPlan& plan) {
  using nlohmann::json;
  const RunOptions& o = plan.options;
  json nbs = json::array();
  for (const auto& n : plan.notebooks)
    nbs.push_back({{"name", n.name}, {"input", n.input}, {"output", n.output}, {"workdir", n.workdir}});
  auto opt = [](const std::optional<std::uint64_t>& v) { return v ? json(*v) : json(nullptr); };
  return {{"kernel", o.kernel},
          {"slots", plan.slots},
          {"timeout", opt(o.timeout)},
          {"notebook_timeout", opt(o.notebook_timeout)},
          {"startup_timeout", o.startup_timeout},
          {"allow_errors", o.allow_errors},
          {"kernel_options", o.kernel_options},
          {"output_dir", plan.output_dir},
          {"inplace", o.inplace},
          {"report", plan.report_jsonl},
          {"extra_report", o.report.empty() ? json(nullptr) : json(o.report)},
          {"resume", o.resume},
          {"share", std::to_string(o.share_index) + "/" + std::to_string(o.share_count)},
          {"notebooks_in_all_shares", plan.total_before_share},
          {"empty_directories", plan.empty_dirs},
          {"notebooks", nbs}};
}

}  // namespace ik::batch
