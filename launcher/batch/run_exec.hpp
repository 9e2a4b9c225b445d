// `isolated-kernel run`: executes many notebooks, each in a fresh kernel of
// an isolated kernelspec, N at a time.
//
// Design note (the local part of issue 13; the Slurm part builds on it)
// ---------------------------------------------------------------------
// Layers: parse (run_cli.cpp) -> plan (run_plan.cpp: pure, `--dry-run`
// prints it as JSON) -> execute (this file) -> records (run_record.cpp).
//
// Executor: one worker process per notebook, share/run/ik_run_notebook.py
// (installed as DATADIR/isolated-kernel/ik_run_notebook.py), run by the
// Jupyter Python ($IK_JUPYTER_PYTHON, default /usr/bin/python3). It executes
// the notebook with nbclient.NotebookClient against the kernelspec (working
// directory = the notebook's folder, as nbconvert and nbgrader do), with the
// run's launcher options (--memory, ... as extra launcher argv words, which
// override the kernelspec's own), writes the output notebook (temporary file
// + rename), and sends JSON lines on its fd 3: {"event":"ready","cells":N},
// {"event":"cell","cell":n,"cells":N}, then {"event":"done","status":...}.
// Its stdout/stderr (and the launcher's and the kernel's) come here; the
// tail is kept for the launcher's explanation of a kernel's death.
//
// Shares: the plan sorts the notebooks by name; `--share I/K` keeps the
// notebooks whose index i satisfies i % K == I (round robin). A Slurm
// array task runs `isolated-kernel run --share $SLURM_ARRAY_TASK_ID/K
// [the same options and inputs]`: discovery is deterministic, so every task
// computes the same list and takes its own part; `-j` applies inside the task.
//
// Output directory (--output-dir, default ./run-output; shared filesystem
// on a cluster):
//   OUTDIR/<path>.ipynb            executed notebooks, mirroring the input tree
//                                  (the path from the current directory when
//                                  the input is under it, else from the
//                                  argument's parent); with --inplace the
//                                  inputs themselves
//   OUTDIR/report.jsonl            the local run's records, one JSON line per
//                                  notebook, appended as each one ends (a
//                                  follower can tail it), rewritten at the end
//   OUTDIR/report.share-I-of-K.jsonl   the same for share I of K (one writer
//                                  per file: no appends from two hosts)
// `--resume` reads OUTDIR/report*.jsonl (the last record per input wins)
// and skips a notebook whose record is ok for the same input SHA-256 (with
// --inplace: or whose content is the output that run wrote).
//
// Record (JSON line; CSV with the same columns for --report FILE.csv):
//   notebook     name shown (relative to the current directory when under it)
//   status       ok | error | timeout | memory-limit | wall-time-limit |
//                process-limit | cpu-time-limit | file-size-limit |
//                kernel-died | could-not-start | interrupted
//   detail       one line for people ("kernel killed by the memory limit ...")
//   cell         code cell number (1-based) that failed (or first raised, with
//                --allow-errors, where status stays ok and errors counts them)
//   ename, evalue, errors, cells, seconds, peak_memory_bytes (the kernel's
//   peak RSS), input, output, input_sha256, output_sha256, started (UTC),
//   kernel, host, share ("I/K"), resumed, timing (the worker's phases in
//   seconds: startup, kernel_start, execute, shutdown)
//
// Exit status: 0 all ok, 1 some notebook failed, 2 bad usage, 125 could not
// run at all, 128+N stopped by signal N (SIGINT, SIGTERM: workers get
// SIGTERM, kernels are shut down, the partial report is written).
// Nothing is left behind when `run` is killed: workers die with it
// (PR_SET_PDEATHSIG), launchers follow their client (the worker), and a
// janitor process removes the run's private JUPYTER_RUNTIME_DIR (the
// connection files) once the orchestrator and every worker are gone.
#pragma once
#include <string>

#include "batch/run_plan.hpp"
#include "kernelspec/jupyter.hpp"

namespace ik::batch {

struct ExecSetup {
  std::string python;                              // the Jupyter Python
  std::string worker;                              // ik_run_notebook.py
  bool memory_limit = false, nproc_limit = false;  // in force for this run's kernels
  KernelspecInfo spec;                             // a pooled one gets a pool of the run's own (run_pool.hpp)
};

// Runs the plan; returns the exit status. Prints progress on stderr and the
// summary table on stdout.
int execute_plan(const RunPlan& plan, const ExecSetup& setup);

// Where ik_run_notebook.py is: $IK_DATA_DIR, next to the program
// (../share/isolated-kernel), the install prefix, the source tree.
std::string find_worker();

}  // namespace ik::batch
