"""The benchmark behind bench/run (and the shared parts of bench/soak).

Layout:

  cli.py       bench/run's options, the run of the chosen steps, results file
  registry.py  Section, Step, Count, register(), fixture(): how sections plug in
  bench.py     Bench: the state of one run (args, env, live kernels, results, log)
  env.py       Env: copied programs, temporary directory, kernelspecs
  kernels.py   Kernel, Client (jupyter_client's Session on plain zmq sockets),
               PortPool, and the "pair" fixture (one plain + one isolated kernel)
  procfs.py    /proc and memory-cgroup readings
  stats.py     percentiles, summaries, bootstrap intervals (stdlib only)
  rounds.py    interleaved(): each round runs every variant once, shuffled anew
  machine.py   what the run ran on
  report.py    the markdown report and docs/performance.md
  common.py    REPO, PYTHON, the build directory's programs (stdlib only)
  sections/    one module per section: setup, setup_tree, start, rtt,
               throughput, footprint, scale, pool, batch

Adding a section (say "slurm") is adding one module, sections/slurm.py, that
measures, renders its part of the report and registers itself; nothing else
changes (every module of sections/ is imported, the registry orders them):

    from ..registry import Count, Section, Step, register
    from ..report import f

    def run(bench):                      # measure; keep the raw data
        n = bench.args.slurm_jobs        # its count option, see counts below
        bench.log(f"9. slurm: {n} jobs")
        ...                              # bench.env, Kernel(bench, "isolated"), rounds.interleaved(...)
        bench.results["slurm"] = {"jobs": n, "submit_s": summary(samples)}

    def render(res):                     # markdown lines; [] when not measured
        s = res.get("slurm")
        if not s:
            return []
        return [f"### 9. Slurm ({s['jobs']} jobs)", "", f"median {f(s['submit_s']['median'])} s", ""]

    def targets(res):                    # optional rows of the targets table
        s = res.get("slurm")
        return [("submission under 5 s", f"{s['submit_s']['median']:.1f} s", s["submit_s"]["median"] < 5)] if s else []

    register(Section(
        name="slurm",                    # what --only takes
        order=100,                       # place in --only, --help, targets, report
        steps=(Step(100, run),),         # when it runs among all steps (stage)
        counts=(Count("--slurm-jobs", full=40, quick=4, help="jobs (default 40)"),),
        render=render, targets=targets))

Section.order places the section in lists and in the report (setup 10,
setup-tree 20, start 30, rtt 40, throughput 50, footprint 60, scale 70,
pool 80, batch 90).
Step.stage decides when a step runs; a section may have several steps (rtt
runs the round trip at 41 and the relay-only echo at 50; footprint idles at
40 and watches a waiting launcher at 60). Steps with uses="pair" get
run(bench, kernels) and share one plain + one isolated kernel with the other
pair steps next to them in stage order (footprint 40, rtt 41, throughput
42); a new shared set-up is a new @fixture("name") context manager. A
section that needs its own kernelspec adds kernelspecs=fn(env) -> {variant:
argv} (see sections/rtt.py); Kernel(bench, variant) then starts it (a
kernelspec with metadata, or one installed by `isolated-kernel install`, is
written by the step itself into bench.env.jupyter or the private
JUPYTER_DATA_DIR: see sections/pool.py). Keep the
results JSON-serialisable: `bench/run --render FILE` rebuilds the report from
them alone. Kernels started with Kernel(bench, ...) are stopped by Bench on
any exit; anything else a step starts it must stop itself (try/finally).
Also add a line for it to the section list in bench/run's docstring.
"""
