// Progress of `isolated-kernel run` on stderr: on a terminal an overall bar
// (done, failed, running, ETA) and one line per running notebook, redrawn in
// place; otherwise one plain line per event.
#pragma once
#include <chrono>
#include <string>
#include <vector>

#include "batch/run_record.hpp"

namespace ik::batch {

struct RunningView {
  std::string name;
  int cell = 0, cells = 0;  // code cell being executed, of how many (0: starting the kernel; -1: not a notebook)
  std::chrono::steady_clock::time_point started;
};

class Progress {
 public:
  Progress(bool terminal, size_t total, size_t already_done);
  void started(const std::string& name);
  void finished(const RunRecord& r);
  void note(const std::string& line);  // a message between the bars
  // Redraws the bar (terminal only; at most every ~200 ms by the caller).
  void draw(const std::vector<RunningView>& running);
  void clear();  // remove the bar before the summary

 private:
  std::string bar(size_t running) const;
  bool terminal_;
  size_t total_, done_ = 0, failed_ = 0;
  size_t drawn_lines_ = 0;
  int width_ = 80;
  std::chrono::steady_clock::time_point t0_;
  double finished_seconds_ = 0;  // sum of finished notebooks' times, for the ETA
  size_t finished_here_ = 0;
};

}  // namespace ik::batch
