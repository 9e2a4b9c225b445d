"""bench/run's command line: options (the sections' counts included), the run
of the chosen sections' steps, the results file and the report."""
from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import time
from pathlib import Path

from .bench import Bench
from .common import REPO, default_build_dir
from .env import Env
from .machine import machine_info
from .procfs import loadavg
from .registry import all_sections, get_fixture, load_sections
from .report import render, write_docs


def parser(doc, sections):
    names = [s.name for s in sections]
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Sections: " + ", ".join(names))
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke run of every section (~3 min)")
    ap.add_argument("--only", default=",".join(names), help="comma-separated sections to run")
    ap.add_argument("--json", help="where to write the raw results (default <build>/bench-results.json)")
    ap.add_argument("--docs", help="markdown file to regenerate (default docs/performance.md for full runs)")
    ap.add_argument("--no-docs", action="store_true", help="do not write the markdown file")
    ap.add_argument("--build-dir", default=str(default_build_dir()))
    ap.add_argument("--seed", type=int, default=12345, help="seed of the interleaving order")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (kernelspecs, binaries)")
    ap.add_argument("--render", metavar="JSON", help="measure nothing: regenerate the report (and --docs, default "
                    "docs/performance.md) from a results file of an earlier run")
    g = ap.add_argument_group("counts (defaults: full run / --quick)")
    counts = [c for s in sections for c in s.counts if not c.later] + [c for s in sections for c in s.counts if c.later]
    for c in counts:
        g.add_argument(c.flag, type=c.type, default=c.default, help=c.help)
    return ap, counts


def run_steps(bench, sections, save):
    """Every step of the chosen sections in order of stage; consecutive steps
    that use the same fixture share one instance of it."""
    steps = sorted((st for s in sections for st in s.steps), key=lambda st: st.stage)
    for uses, group in itertools.groupby(steps, key=lambda st: st.uses):
        if uses is None:
            for st in group:
                st.run(bench)
                save()
            continue
        with get_fixture(uses)(bench) as value:
            for st in group:
                st.run(bench, value)
                save()


def main(doc):
    sections = load_sections()
    ap, counts = parser(doc, sections)
    args = ap.parse_args()
    for c in counts:
        if getattr(args, c.dest) is None:
            setattr(args, c.dest, c.quick if args.quick else c.full)
    if args.render:
        res = json.loads(Path(args.render).read_text())
        quick = bool(res.get("args", {}).get("quick"))
        table = render(res, quick)
        print(table)
        if not args.no_docs:
            docs_path = Path(args.docs) if args.docs else REPO / "docs" / "performance.md"
            write_docs(docs_path, res, table, quick)
            print(f"wrote {docs_path}", file=sys.stderr)
        return 0
    names = [s.name for s in sections]
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in chosen if s not in names]
    if bad:
        ap.error(f"unknown sections {bad}; choose from {', '.join(names)}")
    build_dir = Path(args.build_dir).resolve()
    json_path = Path(args.json) if args.json else build_dir / "bench-results.json"
    docs_path = None
    if not args.no_docs:
        if args.docs:
            docs_path = Path(args.docs)
        elif not args.quick and set(chosen) == set(names):
            docs_path = REPO / "docs" / "performance.md"

    # every section's kernelspecs, chosen or not: the results list them all
    env = Env(build_dir, args.keep_tmp, [s.kernelspecs for s in sections if s.kernelspecs])
    bench = Bench(args, env)
    t0 = time.monotonic()
    res = bench.results
    res["load_start"] = loadavg()
    res["machine"] = machine_info(env)
    res["args"] = vars(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    json_path.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every step, so that a failure keeps what was measured
        res["load_end"] = loadavg()
        res["wall_s"] = time.monotonic() - t0
        json_path.write_text(json.dumps(res, indent=1, default=str))

    try:
        bench.log(f"machine: {res['machine']['nproc']} CPUs, load {res['load_start']}; temp dir {env.tmp}")
        run_steps(bench, [s for s in all_sections() if s.name in chosen], save)
    except KeyboardInterrupt:
        bench.log("interrupted; stopping kernels")
        bench.cleanup()
        env.close()
        return 130
    except Exception:
        bench.cleanup()
        env.keep = True
        bench.log(f"failed; partial results in {json_path}, kernel output in {env.tmp}/kernels.log")
        raise
    finally:
        bench.cleanup()
    save()
    table = render(res, args.quick)
    print(table)
    bench.log(f"wrote {json_path}")
    if docs_path:
        write_docs(docs_path, res, table, args.quick)
        bench.log(f"wrote {docs_path}")
    env.close()
    return 0
