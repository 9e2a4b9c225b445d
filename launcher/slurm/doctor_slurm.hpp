// `isolated-kernel doctor --slurm`: the host checks of `doctor`, run on a
// compute node through srun, and a verdict a cluster user can pass on to
// the admins (user namespaces are sometimes disabled on compute nodes).
#pragma once
#include <string>
#include <vector>

namespace ik {

// What the remote doctor's output says about user namespaces on the node.
struct NodeVerdict {
  std::string node;        // from the "Slurm node" line, "" when missing
  bool completed = false;  // the doctor printed its last line
  bool userns_disabled = false;
  std::vector<std::string> sysctls_to_set;  // "user.max_user_namespaces=15000", ...
  std::string userns_failure;               // the "user namespaces" FAIL detail, "" when it passed
};

// srun [--slurm-opt...] ... -- SELF doctor [--no-kernels]  (pure)
std::vector<std::string> doctor_srun_argv(const std::string& self, const std::vector<std::string>& slurm_opts,
                                          bool kernels);

// Reads the PASS/WARN/FAIL lines of a doctor run on a node (pure).
NodeVerdict read_node_verdict(const std::string& doctor_stdout);

// The line that tells what to ask the admins, "" when namespaces work (pure).
std::string admin_advice(const NodeVerdict& v);

// Runs it and prints the node's lines and the verdict. Exit status: 0 all
// passed on the node, 1 a check failed there, 2 no srun on PATH, 125 srun
// could not run the doctor on a node.
int run_doctor_slurm(const std::vector<std::string>& slurm_opts, bool kernels);

}  // namespace ik
