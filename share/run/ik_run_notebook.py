"""Executes one notebook for `isolated-kernel run` (one worker per notebook).

The executor is nbclient's NotebookClient, as in `jupyter nbconvert --execute`
and nbgrader: the kernel is the isolated kernelspec named in the job, its
working directory is the notebook's folder. This script adds only what the
orchestrator needs: progress events, a verdict, per-run limits and the
output file.

    /usr/bin/python3 ik_run_notebook.py JOB_JSON

JOB_JSON: {"input": PATH, "output": PATH or "", "kernel": NAME,
           "timeout": S or null (per cell), "notebook_timeout": S or null,
           "startup_timeout": S, "allow_errors": bool,
           "kernel_options": [launcher options for this run, e.g. "--memory", "256M"],
           "override": [the options in kernel_options that replace the kernelspec's own]}

Events go to fd 3 (else stdout), one JSON object a line:
  {"event": "ready", "cells": N}                 kernel answered kernel_info
  {"event": "cell", "cell": n, "cells": N}        code cell n (1-based) started
  {"event": "done", "status": ..., ...}           the verdict, always last
status: ok, error, timeout, kernel-died, could-not-start, interrupted. The
orchestrator turns kernel deaths into limit verdicts from the launcher's
explanation ("Kernel stopped: ..." on iopub, or its stderr).
"""

import time

T0 = time.monotonic()  # the worker's start, for the timing of its phases

import asyncio  # noqa: E402
import atexit  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

EVENTS = None


def emit(obj):
    EVENTS.write(json.dumps(obj) + "\n")
    EVENTS.flush()


def with_options(argv, options, override):
    """The kernelspec argv with this run's launcher options after argv[0].

    An option in OVERRIDE that the kernelspec's argv already gives (as
    `--opt V` or `--opt=V`, before `--`) is dropped there: the launcher
    accepts each option once.
    """
    end = argv.index("--") if "--" in argv else len(argv)
    kept, i = [argv[0]], 1
    while i < end:
        a = argv[i]
        if a in override:
            i += 2
            continue
        if any(a.startswith(o + "=") for o in override):
            i += 1
            continue
        kept.append(a)
        i += 1
    return kept + list(options) + argv[end:]


def spec_manager(options, override):
    from jupyter_client.kernelspec import KernelSpecManager

    class RunSpecManager(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            spec = super().get_kernel_spec(kernel_name)
            if options:
                spec.argv = with_options(spec.argv, options, override)
            return spec

    return RunSpecManager()


def first_error(cells):
    """(code cell number, cell index, ename, evalue) of the first error output, else None."""
    n = 0
    for i, c in enumerate(cells):
        if c.cell_type != "code":
            continue
        n += 1
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                return n, i, o.get("ename", ""), o.get("evalue", "")
    return None


def count_errors(cells):
    return sum(1 for c in cells if c.cell_type == "code"
               and any(o.get("output_type") == "error" for o in c.get("outputs", [])))


def exit_notice(cell):
    """The launcher's "Kernel stopped: ..." line in CELL's outputs, if any."""
    if cell is None:
        return ""
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            for line in o.get("text", "").splitlines():
                if line.startswith("Kernel stopped: "):
                    return line[len("Kernel stopped: "):]
    return ""


def write_output(nb, path):
    import nbformat
    # Beside the destination, then renamed: a reader (or --collect on a
    # shared filesystem) never sees half a notebook.
    tmp = f"{path}.ik-tmp-{os.getpid()}"
    try:
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class NotebookDeadline(Exception):
    pass


async def execute_until_deadline(client, seconds, state):
    """client.async_execute(), cancelled after SECONDS. Whatever the
    cancellation turns into inside nbclient (a DeadKernelError, a
    CancelledError), past the deadline it is a NotebookDeadline."""
    task = asyncio.ensure_future(client.async_execute())

    def expire():
        state["deadline"] = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(seconds, expire) if seconds else None
    try:
        await task
    except BaseException:
        if state.get("deadline"):
            raise NotebookDeadline() from None
        raise
    finally:
        if timer:
            timer.cancel()


async def execute(job, state):
    import nbformat
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    try:
        nb = nbformat.read(job["input"], as_version=4)
    except OSError as e:
        return {"status": "could-not-start", "detail": f"cannot read it: {e.strerror}"}
    except Exception as e:  # nbformat raises several kinds for bad JSON / schema
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return {"status": "could-not-start", "detail": f"not a valid notebook: {msg}"}
    state["nb"] = nb
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    number = {idx: n + 1 for n, idx in enumerate(code)}
    total = len(code)
    state["cells"] = total

    # The connection file goes into the run's private runtime directory (run
    # sets JUPYTER_RUNTIME_DIR; its janitor removes it however the run ends).
    # Without a name, jupyter_client makes one with mkstemp in /tmp, which a
    # SIGKILLed worker leaves behind.
    from jupyter_core.paths import jupyter_runtime_dir
    import uuid
    connection_file = os.path.join(jupyter_runtime_dir(), f"kernel-{uuid.uuid4()}.json")
    km = AsyncKernelManager(kernel_name=job["kernel"], connection_file=connection_file,
                            kernel_spec_manager=spec_manager(job.get("kernel_options", []),
                                                             set(job.get("override", []))))
    pin_ports_outside_the_ephemeral_range(km)
    state["km"] = km

    def on_start(notebook, **_):
        state["t_ready"] = time.monotonic()
        state["ready"] = True
        emit({"event": "ready", "cells": total})

    def on_cell(cell, cell_index, **_):
        state["cell"] = cell_index
        emit({"event": "cell", "cell": number.get(cell_index, 0), "cells": total})

    client = NotebookClient(
        nb, km=km, timeout=job.get("timeout"), startup_timeout=job.get("startup_timeout") or 60,
        allow_errors=bool(job.get("allow_errors")), kernel_name=job["kernel"],
        resources={"metadata": {"path": os.path.dirname(os.path.abspath(job["input"]))}},
        on_notebook_start=on_start, on_cell_execute=on_cell)
    state["client"] = client

    def where():
        i = state.get("cell")
        cell = nb.cells[i] if i is not None else None
        return {"cell": number.get(i), "cell_index": i}, cell

    # nbclient registers an atexit clean-up of the kernel manager it was
    # given; this worker shuts the kernel down itself (main_async).
    state["t_start"] = time.monotonic()
    try:
        await execute_until_deadline(client, job.get("notebook_timeout"), state)
    except NotebookDeadline:
        pos, _ = where()
        return {"status": "timeout", **pos,
                "detail": f"the notebook ran longer than {job['notebook_timeout']}s (--notebook-timeout)"}
    except CellTimeoutError:
        pos, _ = where()
        return {"status": "timeout", **pos, "detail": f"a cell ran longer than {job.get('timeout')}s (--timeout)"}
    except CellExecutionError as e:
        pos, _ = where()
        return {"status": "error", **pos, "ename": e.ename, "evalue": e.evalue}
    except DeadKernelError as e:
        pos, cell = where()
        return {"status": "kernel-died", **pos, "notice": exit_notice(cell), "detail": str(e).strip()[:300]}
    except Exception as e:
        atexit.unregister(client._cleanup_kernel)
        if not state.get("ready"):
            return {"status": "could-not-start", "detail": f"{type(e).__name__}: {e}".strip()[:500]}
        pos, cell = where()
        notice = exit_notice(cell)
        if notice or not await km.is_alive():
            return {"status": "kernel-died", **pos, "notice": notice, "detail": f"{type(e).__name__}: {e}"[:300]}
        raise
    out = {"status": "ok"}
    first = first_error(nb.cells)
    if first:  # --allow-errors: ran to the end; say where it first raised
        out.update(errors=count_errors(nb.cells), cell=first[0], cell_index=first[1], ename=first[2], evalue=first[3])
    return out


def pin_ports_outside_the_ephemeral_range(km):
    """jupyter_client picks the kernel's ports by bind(0) and close, in the
    ephemeral range, and the launcher binds them a moment later: with -j N the
    other workers' client connections take their source ports from that same
    range, and one of them could take a port this kernel was given (seen:
    "bind the hb channel ...: Address already in use"). connect() never takes
    a source port below the range, so the ports are picked there, each checked
    free by a bind. Falls back to jupyter_client's own choice when the range
    cannot be read or leaves no room below it."""
    import random
    import socket
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return
    first = 10000
    if km.transport != "tcp" or low - first < 1000:
        return
    ports = []
    for _ in range(200):
        port = random.randrange(first, low)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind((km.ip, port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == 5:
            break
    if len(ports) < 5:
        return
    km.cache_ports = False  # else the provisioner replaces them with its own
    km.shell_port, km.iopub_port, km.stdin_port, km.hb_port, km.control_port = ports


async def main_async(job):
    state = {"cell": None, "ready": False}
    task = asyncio.ensure_future(execute(job, state))
    loop = asyncio.get_running_loop()
    # The orchestrator stops a run with SIGTERM. nbclient installs its own
    # handlers while the kernel is up; these take over around them.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        result = await task
    except asyncio.CancelledError:
        result = {"status": "interrupted", "cell": None}
    except Exception:
        result = {"status": "kernel-died" if state.get("ready") else "could-not-start",
                  "detail": traceback.format_exc().strip().splitlines()[-1][:500]}
    state["t_end"] = time.monotonic()
    km = state.get("km")
    if km is not None:
        try:
            if await km.is_alive():
                await km.shutdown_kernel(now=result["status"] != "ok")
        except Exception:
            pass
        try:
            await km.cleanup_resources()  # the connection file
        except Exception:
            pass
    result.setdefault("cells", state.get("cells"))
    nb = state.get("nb")
    # A kernel that never started leaves nothing worth writing.
    if nb is not None and job.get("output") and state.get("ready"):
        try:
            write_output(nb, job["output"])
            result["output_written"] = True
        except OSError as e:
            result["output_written"] = False
            result["output_error"] = f"{job['output']}: {e.strerror}"
    # Seconds in each phase: Python and imports, kernel start (to its
    # kernel_info reply), execution, shutdown and writing.
    t = state
    if "t_ready" in t:
        result["timing"] = {"startup": round(t["t_start"] - T0, 3), "kernel_start": round(t["t_ready"] - t["t_start"], 3),
                            "execute": round(t["t_end"] - t["t_ready"], 3),
                            "shutdown": round(time.monotonic() - t["t_end"], 3)}
    # The largest descendant we waited for: the kernel (the launcher is small).
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["peak_memory_bytes"] = peak * 1024 if peak and state.get("ready") else None
    return result


def main():
    global EVENTS
    try:
        EVENTS = os.fdopen(3, "w", buffering=1)
    except OSError:
        EVENTS = sys.stdout
    if len(sys.argv) != 2:
        emit({"event": "done", "status": "could-not-start", "detail": "usage: ik_run_notebook.py JOB_JSON"})
        return 2
    job = json.loads(sys.argv[1])
    t0 = time.monotonic()
    result = asyncio.run(main_async(job))
    result["seconds"] = round(time.monotonic() - t0, 3)
    emit({"event": "done", **{k: v for k, v in result.items() if v is not None}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
