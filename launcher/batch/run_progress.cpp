#include "batch/run_progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace ik::batch {

Progress::Progress(bool terminal, size_t total, size_t already_done)
    : terminal_(terminal), total_(total), done_(already_done), t0_(std::chrono::steady_clock::now()) {
  winsize ws{};
  if (terminal_ && ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) width_ = ws.ws_col;
}

void Progress::clear() {
  if (!terminal_ || drawn_lines_ == 0) return;
  // Up to the bar's first line, then erase to the end of the screen.
  std::fprintf(stderr, "\r\x1b[%zuA\x1b[J", drawn_lines_);
  drawn_lines_ = 0;
}

void Progress::note(const std::string& line) {
  clear();
  std::fprintf(stderr, "%s\n", line.c_str());
}

void Progress::started(const std::string& name) {
  if (!terminal_) std::fprintf(stderr, "start    %s\n", name.c_str());
}

void Progress::finished(const RunRecord& r) {
  ++done_;
  if (!is_ok(r)) ++failed_;
  if (!r.resumed) {
    finished_seconds_ += r.seconds;
    ++finished_here_;
  }
  std::string d = short_detail(r);
  char line[600];
  std::snprintf(line, sizeof line, "%-8s %s (%s)%s%s", r.status == "ok" ? "ok" : r.status.c_str(), r.notebook.c_str(),
                format_seconds(r.seconds).c_str(), d.empty() ? "" : ": ", d.c_str());
  note(line);
}

std::string Progress::bar(size_t running) const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  std::string eta = "-";
  if (finished_here_ > 0 && done_ < total_) {
    // Notebooks left times the mean duration, spread over the slots in use.
    const double per = elapsed / static_cast<double>(finished_here_);
    eta = format_seconds(per * static_cast<double>(total_ - done_));
  }
  char tail[160];
  std::snprintf(tail, sizeof tail, " %zu/%zu done, %zu failed, %zu running, %s elapsed, ETA %s", done_, total_, failed_,
                running, format_seconds(elapsed).c_str(), eta.c_str());
  const int room = std::max(10, std::min(40, width_ - static_cast<int>(std::string(tail).size()) - 3));
  const int fill = total_ ? static_cast<int>(room * done_ / total_) : room;
  return "[" + std::string(fill, '#') + std::string(room - fill, '.') + "]" + tail;
}

void Progress::draw(const std::vector<RunningView>& running) {
  if (!terminal_) return;
  clear();
  const auto now = std::chrono::steady_clock::now();
  std::string out = bar(running.size()) + "\n";
  for (const auto& r : running) {
    const double s = std::chrono::duration<double>(now - r.started).count();
    std::string where = r.cells < 0 ? "running"  // a Slurm array task (slurm/run_slurm.cpp)
                        : r.cells   ? "cell " + std::to_string(r.cell) + "/" + std::to_string(r.cells)
                                    : "starting kernel";
    std::string line = "  " + r.name + "  " + where + "  " + format_seconds(s);
    if (static_cast<int>(line.size()) >= width_) line = line.substr(0, width_ - 1);
    out += line + "\n";
  }
  std::fputs(out.c_str(), stderr);
  std::fflush(stderr);
  drawn_lines_ = 1 + running.size();
}

}  // namespace ik::batch
