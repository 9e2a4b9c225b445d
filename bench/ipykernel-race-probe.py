# A sitecustomize for a kernel (PYTHONPATH=<dir holding it as sitecustomize.py>,
# kernel argv unchanged) that forces the overlap behind ipykernel 6.17's
# abort at shutdown (bench/soak.md, "The abort at shutdown"): the control
# thread, back from its shutdown_request handler, waits until the main
# thread is inside IOPubThread.close(), which waits a random
# 0..IK_RACE_FORCE_US µs (default 300) before closing the IOPub socket; the
# control thread's last "idle" status then goes to that socket from the
# control thread itself. Both sides log to the kernel's real stderr (a
# duplicate of fd 2 taken before ipykernel redirects it), with faulthandler
# on it for crashes and the core limit raised. For an isolated kernelspec:
# --mnt ". ro:DIR" --keep-env PYTHONPATH --keep-env IK_RACE_FORCE_US.
import faulthandler
import os
import random
import resource
import threading
import time

import ipykernel.iostream as iostream
import ipykernel.kernelbase as kernelbase

_err = os.fdopen(os.dup(2), "w")
faulthandler.enable(file=_err, all_threads=True)
_hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
resource.setrlimit(resource.RLIMIT_CORE, (_hard, _hard))
_max_delay = float(os.environ.get("IK_RACE_FORCE_US", "300")) / 1e6
_closing = threading.Event()
_close, _really_send = iostream.IOPubThread.close, iostream.IOPubThread._really_send
_shutdown_request = kernelbase.Kernel.shutdown_request


def close(self):
    print(f"probe: main closes IOPub at {time.monotonic():.6f}", file=_err, flush=True)
    _closing.set()
    time.sleep(random.uniform(0, _max_delay))
    _close(self)
    print(f"probe: main closed IOPub at {time.monotonic():.6f}", file=_err, flush=True)


def really_send(self, msg, *args, **kwargs):
    name = threading.current_thread().name
    if name != "IOPub":
        print(f"probe: {name} sends on IOPub directly at {time.monotonic():.6f} closed={self.closed}",
              file=_err, flush=True)
    try:
        return _really_send(self, msg, *args, **kwargs)
    except Exception as e:
        print(f"probe: {name}: {e!r}", file=_err, flush=True)
        raise


async def shutdown_request(self, stream, ident, parent):
    await _shutdown_request(self, stream, ident, parent)
    _closing.wait(5)


iostream.IOPubThread.close = close
iostream.IOPubThread._really_send = really_send
kernelbase.Kernel.shutdown_request = shutdown_request
