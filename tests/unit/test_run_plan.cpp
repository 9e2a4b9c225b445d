// `isolated-kernel run`: the pure plan (names, mirrored outputs, shares,
// collisions) and the verdicts from what a worker and the launcher said.
#include <doctest/doctest.h>

#include "batch/run_plan.hpp"
#include "batch/run_record.hpp"

using namespace ik::batch;
using nlohmann::json;

namespace {

Found dir(const std::string& arg, const std::string& path, std::vector<std::string> nbs) {
  return Found{arg, path, true, std::move(nbs)};
}

}  // namespace

TEST_CASE("run plan: outputs mirror the tree under the output directory") {
  RunOptions o;
  auto plan = build_run_plan(o, {dir("subs", "/home/t/subs", {"/home/t/subs/b/ps1.ipynb", "/home/t/subs/a/ps1.ipynb"})},
                             "/home/t", 2);
  REQUIRE(plan);
  REQUIRE(plan->notebooks.size() == 2);
  CHECK(plan->notebooks[0].name == "subs/a/ps1.ipynb");  // sorted by name
  CHECK(plan->notebooks[0].output == "/home/t/run-output/subs/a/ps1.ipynb");
  CHECK(plan->notebooks[0].workdir == "/home/t/subs/a");
  CHECK(plan->slots == 2);
  CHECK(plan->report_jsonl == "/home/t/run-output/report.jsonl");
}

TEST_CASE("run plan: outside the current directory, from the argument's parent") {
  RunOptions o;
  o.output_dir = "/out";
  o.jobs = 5;
  auto plan = build_run_plan(o, {dir("/srv/course/sub", "/srv/course/sub", {"/srv/course/sub/x.ipynb"})}, "/home/t", 2);
  REQUIRE(plan);
  CHECK(plan->notebooks[0].name == "/srv/course/sub/x.ipynb");
  CHECK(plan->notebooks[0].output == "/out/sub/x.ipynb");
  CHECK(plan->slots == 5);
}

TEST_CASE("run plan: --inplace, duplicates, empty directories") {
  RunOptions o;
  o.inplace = true;
  auto plan = build_run_plan(o,
                             {Found{"a.ipynb", "/w/a.ipynb", false, {"/w/a.ipynb"}}, dir(".", "/w", {"/w/a.ipynb"}),
                              dir("empty", "/w/empty", {})},
                             "/w", 1);
  REQUIRE(plan);
  REQUIRE(plan->notebooks.size() == 1);
  CHECK(plan->notebooks[0].output == "/w/a.ipynb");
  CHECK(plan->empty_dirs == std::vector<std::string>{"empty"});
}

TEST_CASE("run plan: two inputs for one output, or an output over its input, are refused") {
  RunOptions o;
  o.output_dir = "/out";
  auto clash =
      build_run_plan(o, {dir("/a/x", "/a/x", {"/a/x/n.ipynb"}), dir("/b/x", "/b/x", {"/b/x/n.ipynb"})}, "/w", 1);
  REQUIRE_FALSE(clash);
  CHECK(clash.error().exit_code == ik::kExitUsage);
  CHECK(clash.error().describe().find("/out/x/n.ipynb") != std::string::npos);
  o.output_dir = "/w";
  auto over = build_run_plan(o, {dir(".", "/w", {"/w/n.ipynb"})}, "/w", 1);
  CHECK_FALSE(over);
}

TEST_CASE("run plan: --share I/K takes every K-th notebook, the shares cover all once") {
  std::vector<std::string> nbs;
  for (int i = 0; i < 10; ++i) nbs.push_back("/w/n" + std::to_string(i) + ".ipynb");
  std::vector<std::string> all;
  for (unsigned i = 0; i < 3; ++i) {
    RunOptions o;
    o.share_index = i;
    o.share_count = 3;
    auto plan = build_run_plan(o, {dir(".", "/w", nbs)}, "/w", 1);
    REQUIRE(plan);
    CHECK(plan->total_before_share == 10);
    CHECK(plan->report_jsonl == "/w/run-output/report.share-" + std::to_string(i) + "-of-3.jsonl");
    for (const auto& n : plan->notebooks) all.push_back(n.input);
  }
  std::sort(all.begin(), all.end());
  CHECK(all == nbs);
  CHECK(parse_share("1/4")->first == 1);
  CHECK_FALSE(parse_share("4/4"));
  CHECK_FALSE(parse_share("1/0"));
  CHECK_FALSE(parse_share("x/2"));
  CHECK_FALSE(parse_share("1/2/3"));
}

TEST_CASE("run verdicts") {
  auto verdict = [](WorkerEnd e) {
    RunRecord r;
    apply_verdict(e, r);
    return r;
  };
  WorkerEnd e;
  e.done = json{{"event", "done"},
                {"status", "kernel-died"},
                {"cell", 2},
                {"notice", "killed by the memory limit of 256M (cgroup memory.max, --memory)"}};
  auto r = verdict(e);
  CHECK(r.status == "memory-limit");
  CHECK(r.cell == 2);
  CHECK(r.detail.find("memory limit") != std::string::npos);

  // No notice on iopub: the launcher's line on stderr explains it.
  e.done = json{{"status", "kernel-died"}, {"cell", 1}};
  e.stderr_tail = "noise\nisolated-kernel-launcher: kernel killed after the wall-time limit of 5s (--wall-time)\n";
  CHECK(verdict(e).status == "wall-time-limit");
  e.stderr_tail =
      "isolated-kernel-launcher: kernel: 3 forks refused at the process limit of 10 (cgroup pids.max, --nproc)\n";
  CHECK(verdict(e).status == "process-limit");
  e.stderr_tail.clear();
  e.done = json{{"status", "kernel-died"}, {"notice", "exited with status 3"}};
  CHECK(verdict(e).status == "kernel-died");

  // RLIMIT_AS: the allocation fails, the kernel lives.
  e.done = json{{"status", "error"}, {"cell", 1}, {"ename", "MemoryError"}};
  CHECK(verdict(e).status == "error");
  e.memory_limit = true;
  CHECK(verdict(e).status == "memory-limit");

  // No verdict from the worker at all.
  WorkerEnd gone;
  gone.exit_status = 137;
  CHECK(verdict(gone).status == "could-not-start");
  gone.saw_ready = true;
  CHECK(verdict(gone).status == "kernel-died");
  gone.deadline = true;
  CHECK(verdict(gone).status == "timeout");
  gone.deadline = false;
  gone.stopping = true;
  CHECK(verdict(gone).status == "interrupted");

  // The shutdown interrupted the cell: that is the stop.
  WorkerEnd intr;
  intr.stopping = true;
  intr.done = json{{"status", "error"}, {"cell", 1}, {"ename", "KeyboardInterrupt"}};
  CHECK(verdict(intr).status == "interrupted");
  intr.done = json{{"status", "error"}, {"cell", 1}, {"ename", "ValueError"}};
  CHECK(verdict(intr).status == "error");

  // A verdict reached before the stop stands.
  WorkerEnd fine;
  fine.stopping = true;
  fine.done = json{{"status", "ok"}};
  CHECK(verdict(fine).status == "ok");
  fine.stopping = false;
  fine.done = json{{"status", "ok"}, {"output_written", false}, {"output_error", "/o/x.ipynb: Permission denied"}};
  CHECK(verdict(fine).status == "could-not-start");
}

TEST_CASE("a kernel port taken before the launcher bound it is a start to retry, nothing else is") {
  WorkerEnd e;
  e.exit_status = 0;
  e.done = json{{"status", "could-not-start"}, {"detail", "RuntimeError: Kernel died before replying to kernel_info"}};
  e.stderr_tail =
      "isolated-kernel-launcher: relay: bind the hb channel at tcp://127.0.0.1:23456: Address already in use "
      "(another process already uses that port)\n";
  CHECK(port_taken_at_start(e).find("bind the hb channel") == 0 + std::string("relay: ").size());
  WorkerEnd ready = e;
  ready.saw_ready = true;  // it ran: never started again
  CHECK(port_taken_at_start(ready).empty());
  WorkerEnd stopping = e;
  stopping.stopping = true;
  CHECK(port_taken_at_start(stopping).empty());
  WorkerEnd other = e;  // any other start failure is the notebook's verdict
  other.stderr_tail = "isolated-kernel-launcher: --mnt ro:/nope: No such file or directory\n";
  CHECK(port_taken_at_start(other).empty());
  WorkerEnd kernel_says = e;  // only the launcher's own line counts, not a kernel's output
  kernel_says.stderr_tail = "OSError: relay: bind the hb channel: Address already in use\n";
  CHECK(port_taken_at_start(kernel_says).empty());
}

TEST_CASE("run records: JSON round trip, CSV quoting, table") {
  RunRecord r;
  r.notebook = "a, \"b\".ipynb";
  r.status = "error";
  r.cell = 3;
  r.ename = "ValueError";
  r.evalue = "bad\nvalue";
  r.seconds = 1.5;
  r.peak_memory_bytes = 64ull << 20;
  r.input = "/w/a.ipynb";
  RunRecord back = record_from_json(json::parse(to_json(r).dump()));
  CHECK(back.notebook == r.notebook);
  CHECK(back.cell == 3);
  CHECK(back.peak_memory_bytes == r.peak_memory_bytes);
  CHECK(to_csv(r).rfind("\"a, \"\"b\"\".ipynb\",error,3,ValueError,\"bad\nvalue\"", 0) == 0);
  const std::string table = summary_table({r}, 2.0, "/w/report.jsonl");
  CHECK(table.find("cell 3: ValueError: bad") != std::string::npos);
  CHECK(table.find("1 notebook: 0 ok, 1 failed (1 error) in 2.0s; report: /w/report.jsonl") != std::string::npos);
}
