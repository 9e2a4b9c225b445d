#include "batch/run_record.hpp"

#include <dirent.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>

namespace ik::batch {
using nlohmann::json;

namespace {

template <typename T>
json opt(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

std::string str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

// The last line the launcher wrote about the kernel ("isolated-kernel-launcher: ...").
std::string launcher_line(const std::string& tail) {
  std::string last;
  std::istringstream in(tail);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("isolated-kernel-launcher: ", 0) == 0) last = line.substr(26);
  return last;
}

// The last line of the kernel's own stderr that names an error (a kernel that
// dies at start prints its traceback there), without debugger noise.
std::string error_line(const std::string& tail) {
  std::string last;
  std::istringstream in(tail);
  for (std::string line; std::getline(in, line);)
    if (line.find("Error") != std::string::npos && line.rfind("  ", 0) != 0) last = line;
  return last;
}

bool has(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

// Which limit a launcher explanation names (apply/limits.cpp, apply/exit_reason.cpp).
std::string limit_status(const std::string& why) {
  if (has(why, "memory limit") || has(why, "--memory")) return "memory-limit";
  if (has(why, "wall-time")) return "wall-time-limit";
  if (has(why, "process limit") || has(why, "--nproc")) return "process-limit";
  if (has(why, "CPU time limit")) return "cpu-time-limit";
  if (has(why, "file size limit")) return "file-size-limit";
  return {};
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string first_line(const std::string& s, size_t max = 200) {
  std::string l = s.substr(0, s.find('\n'));
  return l.size() > max ? l.substr(0, max - 3) + "..." : l;
}

}  // namespace

json to_json(const RunRecord& r) {
  return {{"notebook", r.notebook},
          {"status", r.status},
          {"detail", r.detail},
          {"cell", opt(r.cell)},
          {"ename", r.ename.empty() ? json(nullptr) : json(r.ename)},
          {"evalue", r.ename.empty() ? json(nullptr) : json(r.evalue)},
          {"errors", r.errors},
          {"cells", opt(r.cells)},
          {"seconds", std::round(r.seconds * 1000) / 1000},
          {"peak_memory_bytes", opt(r.peak_memory_bytes)},
          {"input", r.input},
          {"output", r.output.empty() ? json(nullptr) : json(r.output)},
          {"input_sha256", r.input_sha256},
          {"output_sha256", r.output_sha256.empty() ? json(nullptr) : json(r.output_sha256)},
          {"started", r.started},
          {"kernel", r.kernel},
          {"host", r.host},
          {"share", r.share},
          {"resumed", r.resumed},
          {"timing", r.timing.is_object() ? r.timing : json(nullptr)}};
}

RunRecord record_from_json(const json& j) {
  RunRecord r;
  r.notebook = str(j, "notebook");
  r.status = str(j, "status");
  r.detail = str(j, "detail");
  if (j.contains("cell") && j["cell"].is_number_integer()) r.cell = j["cell"].get<int>();
  r.ename = str(j, "ename");
  r.evalue = str(j, "evalue");
  if (j.contains("errors") && j["errors"].is_number_integer()) r.errors = j["errors"].get<int>();
  if (j.contains("cells") && j["cells"].is_number_integer()) r.cells = j["cells"].get<int>();
  if (j.contains("seconds") && j["seconds"].is_number()) r.seconds = j["seconds"].get<double>();
  if (j.contains("peak_memory_bytes") && j["peak_memory_bytes"].is_number_unsigned())
    r.peak_memory_bytes = j["peak_memory_bytes"].get<std::uint64_t>();
  r.input = str(j, "input");
  r.output = str(j, "output");
  r.input_sha256 = str(j, "input_sha256");
  r.output_sha256 = str(j, "output_sha256");
  r.started = str(j, "started");
  r.kernel = str(j, "kernel");
  r.host = str(j, "host");
  r.share = str(j, "share");
  r.resumed = j.contains("resumed") && j["resumed"].is_boolean() && j["resumed"].get<bool>();
  if (j.contains("timing") && j["timing"].is_object()) r.timing = j["timing"];
  return r;
}

void apply_verdict(const WorkerEnd& end, RunRecord& r) {
  const std::string launcher = launcher_line(end.stderr_tail);
  if (end.done) {
    const json& d = *end.done;
    r.status = str(d, "status");
    r.detail = str(d, "detail");
    if (d.contains("cell") && d["cell"].is_number_integer()) r.cell = d["cell"].get<int>();
    r.ename = str(d, "ename");
    r.evalue = first_line(str(d, "evalue"), 300);
    if (d.contains("errors") && d["errors"].is_number_integer()) r.errors = d["errors"].get<int>();
    if (d.contains("cells") && d["cells"].is_number_integer()) r.cells = d["cells"].get<int>();
    if (d.contains("peak_memory_bytes") && d["peak_memory_bytes"].is_number_unsigned())
      r.peak_memory_bytes = d["peak_memory_bytes"].get<std::uint64_t>();
    if (d.contains("timing") && d["timing"].is_object()) r.timing = d["timing"];
    if (d.contains("output_written") && d["output_written"] == false) {
      r.detail += (r.detail.empty() ? "" : "; ") + std::string("output not written: ") + str(d, "output_error");
      if (r.status == "ok") r.status = "could-not-start";
    }
  } else if (end.deadline) {
    r.status = "timeout";
  } else {
    r.status = end.saw_ready ? "kernel-died" : "could-not-start";
    r.detail = "the notebook runner exited with status " + std::to_string(end.exit_status);
  }
  if (end.deadline) {
    r.status = "timeout";
    r.detail = "the notebook ran past --notebook-timeout (stopped)";
  }
  // Stopping shuts the kernels down, which may interrupt the running cell
  // (KeyboardInterrupt): that is the stop, not the notebook's error.
  if (end.stopping && r.status != "ok" && (r.status != "error" || r.ename == "KeyboardInterrupt")) {
    r.status = "interrupted";
    r.detail = "the run was stopped";
    return;
  }
  if (r.status == "kernel-died") {
    const std::string notice = end.done ? str(*end.done, "notice") : std::string();
    const std::string why = !notice.empty() ? notice : launcher;
    if (auto s = limit_status(why); !s.empty()) r.status = s;
    if (!why.empty()) r.detail = "kernel " + why;
  } else if (r.status == "could-not-start" && (!launcher.empty() || !error_line(end.stderr_tail).empty())) {
    r.detail +=
        (r.detail.empty() ? "" : "; ") + (launcher.empty() ? "kernel: " + error_line(end.stderr_tail) : launcher);
  } else if (r.status == "error" && r.ename == "MemoryError" && end.memory_limit) {
    // An address-space limit (RLIMIT_AS) refuses the allocation: the kernel lives on.
    r.status = "memory-limit";
    r.detail = "MemoryError at the --memory limit";
  } else if (r.status == "error" && r.ename == "BlockingIOError" && end.nproc_limit) {
    r.status = "process-limit";
    r.detail = "fork refused at the --nproc limit";
  }
}

std::string port_taken_at_start(const WorkerEnd& end) {
  if (end.saw_ready || end.stopping || end.deadline) return {};
  const std::string launcher = launcher_line(end.stderr_tail);
  return has(launcher, "relay: bind the ") && has(launcher, "Address already in use") ? launcher : std::string();
}

std::string csv_header() {
  return "notebook,status,cell,ename,evalue,detail,errors,seconds,peak_memory_bytes,input,output,input_sha256,started,"
         "host,share,resumed\n";
}

std::string to_csv(const RunRecord& r) {
  std::ostringstream o;
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.3f", r.seconds);
  o << csv_field(r.notebook) << ',' << r.status << ',' << (r.cell ? std::to_string(*r.cell) : "") << ','
    << csv_field(r.ename) << ',' << csv_field(r.evalue) << ',' << csv_field(r.detail) << ',' << r.errors << ',' << secs
    << ',' << (r.peak_memory_bytes ? std::to_string(*r.peak_memory_bytes) : "") << ',' << csv_field(r.input) << ','
    << csv_field(r.output) << ',' << r.input_sha256 << ',' << r.started << ',' << csv_field(r.host) << ',' << r.share
    << ',' << (r.resumed ? "true" : "false") << '\n';
  return o.str();
}

Status write_report(const std::string& path, const std::vector<RunRecord>& records) {
  const bool csv = path.size() > 4 && path.compare(path.size() - 4, 4, ".csv") == 0;
  // Written beside it and renamed: a reader sees the old or the new report.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) return sys_error("write the report " + tmp, errno, "check that its directory exists and is writable");
    if (csv) f << csv_header();
    for (const auto& r : records)
      f << (csv ? to_csv(r) : to_json(r).dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
    if (!f.flush()) return sys_error("write the report " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return sys_error("rename " + tmp + " to " + path);
  return ok();
}

std::map<std::string, RunRecord> load_records(const std::string& output_dir) {
  std::map<std::string, RunRecord> out;
  std::vector<std::string> files;
  if (DIR* d = opendir(output_dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind("report", 0) == 0 && n.size() > 6 && n.compare(n.size() - 6, 6, ".jsonl") == 0)
        files.push_back(output_dir + "/" + n);
    }
    closedir(d);
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::ifstream in(f);
    for (std::string line; std::getline(in, line);) {
      auto j = json::parse(line, nullptr, false);
      if (!j.is_object()) continue;  // a line cut by a crash
      RunRecord r = record_from_json(j);
      if (!r.input.empty()) out[r.input] = r;
    }
  }
  return out;
}

std::string short_detail(const RunRecord& r) {
  std::string s;
  if (r.cell) s = "cell " + std::to_string(*r.cell);
  if (!r.ename.empty()) s += (s.empty() ? "" : ": ") + r.ename + (r.evalue.empty() ? "" : ": " + r.evalue);
  if (r.status == "ok" && r.errors > 0)
    s = std::to_string(r.errors) + " cell" + (r.errors > 1 ? "s" : "") + " raised, first " + s;
  else if (!r.detail.empty() && r.ename.empty()) s += (s.empty() ? "" : ": ") + r.detail;
  if (r.resumed) s += (s.empty() ? "" : " ") + std::string("(resumed)");
  return first_line(s, 90);
}

std::string human_size(std::uint64_t bytes) {
  char buf[32];
  const double m = static_cast<double>(bytes) / (1024.0 * 1024.0);
  if (m >= 1024) std::snprintf(buf, sizeof buf, "%.1fG", m / 1024);
  else std::snprintf(buf, sizeof buf, "%.1fM", m);
  return buf;
}

std::string format_seconds(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s) / 3600, static_cast<int>(s) % 3600 / 60);
  return buf;
}

std::string summary_table(const std::vector<RunRecord>& records, double wall_seconds, const std::string& report) {
  size_t w = 8;
  for (const auto& r : records) w = std::max(w, std::min<size_t>(r.notebook.size(), 48));
  std::ostringstream o;
  char line[512];
  std::snprintf(line, sizeof line, "%-*s  %-15s %8s %9s  %s\n", static_cast<int>(w), "NOTEBOOK", "STATUS", "TIME",
                "PEAK MEM", "DETAIL");
  o << line;
  std::map<std::string, int> counts;
  for (const auto& r : records) {
    ++counts[r.status];
    std::string name = r.notebook.size() > w ? "..." + r.notebook.substr(r.notebook.size() - w + 3) : r.notebook;
    std::snprintf(line, sizeof line, "%-*s  %-15s %8s %9s  %s\n", static_cast<int>(w), name.c_str(), r.status.c_str(),
                  format_seconds(r.seconds).c_str(),
                  r.peak_memory_bytes ? human_size(*r.peak_memory_bytes).c_str() : "-", short_detail(r).c_str());
    o << line;
  }
  const int ok_n = counts["ok"];
  const size_t failed = records.size() - static_cast<size_t>(ok_n);
  o << records.size() << " notebook" << (records.size() == 1 ? "" : "s") << ": " << ok_n << " ok";
  if (failed) {
    o << ", " << failed << " failed (";
    bool first = true;
    for (const auto& [status, n] : counts) {
      if (status == "ok") continue;
      o << (first ? "" : ", ") << n << ' ' << status;
      first = false;
    }
    o << ')';
  }
  o << " in " << format_seconds(wall_seconds);
  if (!report.empty()) o << "; report: " << report;
  o << '\n';
  return o.str();
}

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return {};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx) return {};
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  char buf[65536];
  while (f.read(buf, sizeof buf) || f.gcount() > 0) EVP_DigestUpdate(ctx, buf, static_cast<size_t>(f.gcount()));
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx, md, &n);
  EVP_MD_CTX_free(ctx);
  std::string hex;
  char b[3];
  for (unsigned i = 0; i < n; ++i) {
    std::snprintf(b, sizeof b, "%02x", md[i]);
    hex += b;
  }
  return f.bad() ? std::string() : hex;
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace ik::batch
