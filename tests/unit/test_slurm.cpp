// Slurm, pure parts: what `doctor --slurm` reads from a node's doctor
// output, and the job array `run --slurm` plans (script, sbatch words,
// resources, shares).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "slurm/doctor_slurm.hpp"
#include "slurm/run_slurm_plan.hpp"

using Args = std::vector<std::string>;

namespace {

const char* kDisabled =
    "PASS  Slurm node                   ik-nouserns (job 3)\n"
    "PASS  Linux kernel                 6.1.0\n"
    "FAIL  namespace sysctls            user.max_user_namespaces=0\n"
    "FAIL  user namespaces              isolate: create namespaces (clone): No space left on device\n"
    "Some checks failed.\n";

const char* kFine = "PASS  Slurm node                   n7 (job 9)\n"
                    "PASS  namespace sysctls            user.max_user_namespaces=96369\n"
                    "PASS  user namespaces              a sandbox starts\n"
                    "All required checks passed.\n";

ik::slurm::RunShape shape(unsigned n, unsigned slots = 2) {
  ik::slurm::RunShape s;
  s.self = "/usr/bin/isolated-kernel";
  s.cwd = "/home/t/course";
  s.output_dir = "/home/t/course/out";
  for (unsigned i = 0; i < n; ++i) s.notebooks.push_back("nb" + std::to_string(i) + ".ipynb");
  s.slots = slots;
  s.run_args = {"--timeout", "60s", "subs"};
  return s;
}

}  // namespace

TEST_CASE("doctor --slurm: disabled user namespaces name the sysctl for the admins") {
  auto v = ik::read_node_verdict(kDisabled);
  CHECK(v.completed);
  CHECK(v.node == "ik-nouserns");
  CHECK(v.userns_disabled);
  REQUIRE(v.sysctls_to_set == Args{"user.max_user_namespaces=15000"});
  auto a = ik::admin_advice(v);
  CHECK(a.find("compute node ik-nouserns") != std::string::npos);
  CHECK(a.find("sysctl -w user.max_user_namespaces=15000") != std::string::npos);
}

TEST_CASE("doctor --slurm: AppArmor's restriction is named too") {
  auto v = ik::read_node_verdict("FAIL  namespace sysctls            user.max_user_namespaces=63000, "
                                 "kernel.apparmor_restrict_unprivileged_userns=1\nSome checks failed.\n");
  CHECK(v.sysctls_to_set == Args{"kernel.apparmor_restrict_unprivileged_userns=0"});
  CHECK(v.node.empty());
  CHECK(ik::admin_advice(v).find("the compute node") != std::string::npos);
}

TEST_CASE("doctor --slurm: a passing node needs no advice; a cut output is not completed") {
  auto v = ik::read_node_verdict(kFine);
  CHECK(v.completed);
  CHECK(v.node == "n7");
  CHECK(ik::admin_advice(v).empty());
  CHECK_FALSE(ik::read_node_verdict("PASS  Linux kernel                 6.1.0\n").completed);
  // Namespaces blocked otherwise (a seccomp filter): the detail is passed on.
  auto s = ik::read_node_verdict("FAIL  user namespaces              blocked by seccomp\nSome checks failed.\n");
  CHECK(ik::admin_advice(s).find("blocked by seccomp") != std::string::npos);
}

TEST_CASE("doctor --slurm: srun words, the user's options before the program") {
  auto a = ik::doctor_srun_argv("/opt/ik/bin/isolated-kernel", {"--partition=gpu"}, false);
  CHECK(a == Args{"srun", "--nodes=1", "--ntasks=1", "--job-name=isolated-kernel-doctor", "--partition=gpu", "--",
                  "/opt/ik/bin/isolated-kernel", "doctor", "--no-kernels"});
}

TEST_CASE("run --slurm: the submitter's own options are not given to the tasks") {
  using ik::slurm::strip_slurm_args;
  CHECK(strip_slurm_args({"--slurm", "--tasks", "4", "--slurm-opt=--partition=x", "--slurm-opt", "--qos=y", "--no-wait",
                          "-j", "3", "--report=r.csv", "--timeout", "5s", "a", "b"}) ==
        Args{"--timeout", "5s", "a", "b"});
  CHECK(strip_slurm_args({"-j4", "--jobs=2", "--report", "x.csv", "--memory", "1G", "--", "--slurm"}) ==
        Args{"--memory", "1G", "--", "--slurm"});
  // --dry-run prints the submission; the tasks must run.
  CHECK(strip_slurm_args({"--dry-run", "-n", "--resume", "x"}) == Args{"--resume", "x"});
}

TEST_CASE("run --slurm: shares are round robin, as --share I/K takes them") {
  ik::slurm::SlurmRunOptions o;
  o.tasks = 3;
  auto s = ik::slurm::plan_submission(shape(7), o);
  REQUIRE(s);
  CHECK(s->tasks == 3);
  CHECK(s->shares[0] == Args{"nb0.ipynb", "nb3.ipynb", "nb6.ipynb"});
  CHECK(s->shares[2] == Args{"nb2.ipynb", "nb5.ipynb"});
  CHECK(s->script.find("#SBATCH --array=0-2\n") != std::string::npos);
  // The task's own share, from Slurm's variable (double-quoted so sh expands it).
  CHECK(s->script.find(
            "\nexec /usr/bin/isolated-kernel run --timeout 60s subs --share \"${SLURM_ARRAY_TASK_ID}/3\" -j 2\n") !=
        std::string::npos);
  CHECK(s->sbatch_argv.front() == "sbatch");
  CHECK(s->sbatch_argv.back() == "/home/t/course/out/slurm/run.sbatch");
  CHECK(s->sbatch_argv[2] == "--chdir=/home/t/course");
  // More tasks than notebooks: one each.
  o.tasks = 50;
  CHECK(ik::slurm::plan_submission(shape(4), o)->tasks == 4);
  // Default: one task per 4 notebooks.
  o.tasks = 0;
  CHECK(ik::slurm::plan_submission(shape(9), o)->tasks == 3);
  CHECK_FALSE(ik::slurm::plan_submission(shape(0), o));
}

TEST_CASE("run --slurm: --memory and --notebook-timeout become --mem and --time") {
  ik::slurm::SlurmRunOptions o;
  o.tasks = 2;
  auto sh = shape(8, 2);
  sh.memory_bytes = 1024ull << 20;
  sh.notebook_timeout = 600;
  auto s = ik::slurm::plan_submission(sh, o);
  REQUIRE(s);
  // 2 slots x (1024M + 256M) + 512M; 4 notebooks per task in 2 waves of (600 + 60) s + 300 s.
  CHECK(s->script.find("#SBATCH --mem=3072M\n") != std::string::npos);
  CHECK(s->script.find("#SBATCH --time=27\n") != std::string::npos);
  CHECK(s->script.find("#SBATCH --cpus-per-task=2\n") != std::string::npos);
  // A --mem smaller than the kernels need is refused.
  o.slurm_opts = {"--mem=2G"};
  auto small = ik::slurm::plan_submission(sh, o);
  REQUIRE_FALSE(small);
  CHECK(small.error().exit_code == 2);
}

TEST_CASE("run --slurm: --slurm-opt=--mem without --memory sets each kernel's limit") {
  ik::slurm::SlurmRunOptions o;
  o.tasks = 1;
  o.slurm_opts = {"--mem=2560"};  // megabytes, as sbatch reads it
  auto s = ik::slurm::plan_submission(shape(2, 2), o);
  REQUIRE(s);
  // (2560M - 512M - 2 x 256M) / 2 slots
  CHECK(s->kernel_memory_bytes == 768ull << 20);
  CHECK(s->script.find("-j 2 --memory=768M\n") != std::string::npos);
  CHECK(s->script.find("#SBATCH --mem") == std::string::npos);  // the user's, on the command line
  CHECK(s->sbatch_argv[s->sbatch_argv.size() - 2] == "--mem=2560");
  o.slurm_opts = {"--mem=600M"};
  CHECK_FALSE(ik::slurm::plan_submission(shape(2, 2), o));
}

TEST_CASE("run --slurm: words are quoted for sh") {
  using ik::slurm::shell_quote;
  CHECK(shell_quote("plain/path-1.ipynb") == "plain/path-1.ipynb");
  CHECK(shell_quote("it's here") == "'it'\\''s here'");
  CHECK(shell_quote("") == "''");
  CHECK(shell_quote("$HOME") == "'$HOME'");
}
