// One notebook's result in `isolated-kernel run`: the JSON line of the
// report (schema in run_exec.hpp's design note), the verdict from what the
// worker and the launcher said, CSV and the summary table.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.hpp"

namespace ik::batch {

struct RunRecord {
  std::string notebook;  // name as shown
  std::string input, output;
  std::string input_sha256, output_sha256;
  std::string status;       // ok, error, timeout, memory-limit, wall-time-limit, process-limit,
                            // cpu-time-limit, file-size-limit, kernel-died, could-not-start, interrupted
  std::string detail;       // one line for people
  std::optional<int> cell;  // code cell number (1-based) where it failed / first raised
  std::string ename, evalue;
  int errors = 0;  // cells that raised (--allow-errors)
  std::optional<int> cells;
  double seconds = 0;
  std::optional<std::uint64_t> peak_memory_bytes;
  std::string started;  // UTC, ISO 8601
  std::string kernel, host, share;
  bool resumed = false;   // taken over from an earlier report by --resume
  nlohmann::json timing;  // the worker's phases in seconds: startup, kernel_start, execute, shutdown
};

nlohmann::json to_json(const RunRecord& r);
RunRecord record_from_json(const nlohmann::json& j);

// Failures are every status but ok.
inline bool is_ok(const RunRecord& r) { return r.status == "ok"; }

// The verdict, from the worker's last event ("done": status, cell, ename,
// notice) or its absence, the tail of its stderr (the launcher's "kernel:
// ..." line), and whether the run was stopping. Pure.
struct WorkerEnd {
  std::optional<nlohmann::json> done;  // the "done" event
  bool saw_ready = false;
  int exit_status = 0;  // 128+N when killed by N
  std::string stderr_tail;
  bool stopping = false;                           // we stopped it (Ctrl-C)
  bool deadline = false;                           // we killed it at the notebook deadline
  bool memory_limit = false, nproc_limit = false;  // given for this run or by the kernelspec
};
void apply_verdict(const WorkerEnd& end, RunRecord& r);
// The kernel never became ready because another process bound one of its
// ports between the worker choosing them and the launcher binding them (the
// launcher's "relay: bind the ... channel ...: Address already in use"): the
// notebook did not run at all, and a new worker picks other ports. Returns
// that launcher line, or "" for any other end.
std::string port_taken_at_start(const WorkerEnd& end);

// Reports: JSON lines, and CSV for a FILE ending in .csv.
std::string csv_header();
std::string to_csv(const RunRecord& r);
Status write_report(const std::string& path, const std::vector<RunRecord>& records);
// Every record in OUTDIR/report*.jsonl, the last one per input winning;
// unreadable lines are skipped.
std::map<std::string, RunRecord> load_records(const std::string& output_dir);

// "cell 3: ZeroDivisionError: division by zero" and the like; the table's detail column.
std::string short_detail(const RunRecord& r);
std::string format_seconds(double s);
std::string human_size(std::uint64_t bytes);  // "69.4M", "1.0G"
// The final table (NOTEBOOK STATUS DETAIL TIME PEAK-MEM) and a count line.
std::string summary_table(const std::vector<RunRecord>& records, double wall_seconds, const std::string& report);

// Lower-case hex SHA-256 of a file's content ("" when unreadable).
std::string sha256_file(const std::string& path);
std::string utc_now();

}  // namespace ik::batch
