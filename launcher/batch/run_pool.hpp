// `isolated-kernel run` with a pooled kernelspec (metadata.isolated_kernel.pool
// > 0): a warm pool of the run's own (docs/pool.md "Pools of a run"). Before
// the first worker starts, the run asks the pool daemon (started with
// --no-scan if none runs) to hold a pool of exactly the launcher argv its
// workers' kernels will run (the kernelspec's plus the run's options) and
// environment, sized by -j (at most the notebooks to run), and keeps the
// connection open. Its workers get IK_POOL_RUN=<token>, which their
// launchers put in their claims. The pool shrinks as the notebooks run out,
// and ends when the run does: release at the end (answered once its
// sandboxes are gone), the connection's hang-up if the run is killed.
// Any failure here only means cold starts (said on stderr).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "batch/run_plan.hpp"
#include "common/fd.hpp"
#include "kernelspec/jupyter.hpp"

namespace ik::batch {

// jupyter_client's view of the kernelspec's argv with the run's options,
// as share/run/ik_run_notebook.py's with_options() builds it (the options
// after the kernelspec's own, before `--`; an option in `override` that the
// kernelspec gives before `--` is dropped there). Pure; unit-tested.
std::vector<std::string> argv_with_options(const std::vector<std::string>& argv,
                                           const std::vector<std::string>& options,
                                           const std::vector<std::string>& override);

class RunPool {
 public:
  RunPool() = default;
  // Holds a pool of `size` for the run, or does nothing (not pooled, no
  // daemon could be reached: `note()` says why when it is worth saying).
  // `worker_env`: what the run sets in its workers' environment.
  static RunPool open(const KernelspecInfo& spec, const RunOptions& options, int size,
                      const std::map<std::string, std::string>& worker_env, const std::string& python);

  bool active() const { return conn_.valid(); }
  const std::string& token() const { return token_; }
  const std::string& note() const { return note_; }
  // Fewer sandboxes wanted (notebooks not started plus kernels not yet up).
  void shrink_to(int size);
  // Ends the pool and waits until its sandboxes are gone; a one-line
  // summary ("N of M kernels came from the run's pool"), empty if none.
  std::string release();

 private:
  UniqueFd conn_;
  std::string token_, note_;
  int size_ = 0;
};

}  // namespace ik::batch
