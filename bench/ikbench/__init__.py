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
  machine.py   what the run ran on
  report.py    the markdown report and docs/performance.md
  common.py    REPO, PYTHON, the build directory's programs (stdlib only)
  sections/    one module per section: setup, setup_tree, start, rtt,
               throughput, footprint, scale

Adding a section (say "pool") is adding one module, sections/pool.py, that
measures, renders its part of the report and registers itself; nothing else
changes (every module of sections/ is imported, the registry orders them):

    from ..registry import Count, Section, Step, register
    from ..report import f

    def run(bench):                      # measure; keep the raw data
        n = bench.args.pool_claims       # its count option, see counts below
        bench.log(f"7. pool: {n} claims")
        ...                              # bench.env, Kernel(bench, "isolated"), bench.shuffled(...)
        bench.results["pool"] = {"claims": n, "claim_ms": summary(samples)}

    def render(res):                     # markdown lines; [] when not measured
        s = res.get("pool")
        if not s:
            return []
        return [f"### 7. Pool ({s['claims']} claims)", "", f"median {f(s['claim_ms']['median'])} ms", ""]

    def targets(res):                    # optional rows of the targets table
        s = res.get("pool")
        return [("claim under 50 ms", f"{s['claim_ms']['median']:.0f} ms", s["claim_ms"]["median"] < 50)] if s else []

    register(Section(
        name="pool",                     # what --only takes
        order=80,                        # place in --only, --help, targets, report
        steps=(Step(80, run),),          # when it runs among all steps (stage)
        counts=(Count("--pool-claims", full=200, quick=10, help="claims (default 200)"),),
        render=render, targets=targets))

Section.order places the section in lists and in the report (setup 10,
setup-tree 20, start 30, rtt 40, throughput 50, footprint 60, scale 70).
Step.stage decides when a step runs; a section may have several steps (rtt
runs the round trip at 41 and the relay-only echo at 50; footprint idles at
40 and watches a waiting launcher at 60). Steps with uses="pair" get
run(bench, kernels) and share one plain + one isolated kernel with the other
pair steps next to them in stage order (footprint 40, rtt 41, throughput
42); a new shared set-up is a new @fixture("name") context manager. A
section that needs its own kernelspec adds kernelspecs=fn(env) -> {variant:
argv} (see sections/rtt.py); Kernel(bench, variant) then starts it. Keep the
results JSON-serialisable: `bench/run --render FILE` rebuilds the report from
them alone. Kernels started with Kernel(bench, ...) are stopped by Bench on
any exit; anything else a step starts it must stop itself (try/finally).
Also add a line for it to the section list in bench/run's docstring.
"""
