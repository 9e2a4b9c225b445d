// Cancels a submitted job array when the submitting `run --slurm` dies before
// it has followed the job to its end (SIGKILL, the OOM killer, a crash): the
// job must not go on unwatched after its submitter is gone, as Ctrl-C
// already ensures for the signals that can be caught.
#pragma once
#include <sys/types.h>
#include <string>
#include "common/error.hpp"
#include "common/fd.hpp"

namespace ik::slurm {

class CancelGuard {
 public:
  // Starts the guard: a child in a session of its own (a group kill or the
  // terminal's hangup does not take it) that waits for EOF on a socket only
  // this process holds. SCANCEL is the program's path; its output and the
  // guard's one line go to LOG_PATH.
  static Result<CancelGuard> start(const std::string& scancel, const std::string& log_path);
  // From now on, this process's death cancels JOB_ID.
  void job_submitted(const std::string& job_id);
  // The job was followed to its end (or the caller chose --no-wait):
  // nothing to cancel. Waits for the guard to exit.
  void release();

  CancelGuard(CancelGuard&&) = default;
  CancelGuard& operator=(CancelGuard&&) = default;
  ~CancelGuard();  // without release(): the guard cancels the job, if one was submitted

 private:
  CancelGuard() = default;
  UniqueFd pipe_;  // our end of the socket pair
  pid_t pid_ = -1;
};

}  // namespace ik::slurm
