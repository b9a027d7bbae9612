"""`edge-server worker`: lend this device's CPU and memory to a server's model (backends/rpc_worker.py)."""
from __future__ import annotations

import signal
import sys
import threading

from .lan import lan_addresses
from .security import is_loopback


def run_worker(settings, host: str | None, port: int | None, out=sys.stdout) -> int:
    from .backends.rpc_worker import DEFAULT_PORT, Worker
    from .backends.rpc_relay import address
    from .cpu import default_threads

    host = host or "0.0.0.0"  # a worker is for the network; the key keeps it closed
    key = settings.api_key or ""
    if not key and not is_loopback(host):
        print("edge-server worker: a worker on the network needs the server's key. On the server run "
              "`edge-server key`, then here: edge-server worker --api-key <that key> (or EDGE_API_KEY=<that key>); "
              "--host 127.0.0.1 serves this device alone without one.", file=sys.stderr)
        return 2
    threads = settings.n_threads or default_threads()[0]
    port = DEFAULT_PORT if port is None else port  # 0: any free port (the line below says which)
    if not 0 <= port < 65536 or threads < 1:
        print("edge-server worker: --port is from 0 to 65535 and --n-threads at least 1", file=sys.stderr)
        return 2
    try:
        worker = Worker(host, port, key, threads, settings.data_dir / "rpc-cache", settings.meminfo_path)
    except (OSError, RuntimeError) as exc:
        print(f"edge-server worker: {exc}", file=sys.stderr)
        return 1
    free = worker.status()["free_bytes"]
    names = ",".join(address((a, worker.port)) for a in lan_addresses(host))
    print(f"edge-server worker on {names} ({threads} threads, "
          f"{f'{free / 1e9:.1f} GB' if free else 'unknown'} free memory"
          f"{', key required' if key else ''}).\n"
          f"On the server, with the same key:  edge-server --workers {names}   (or EDGE_WORKERS={names})",
          file=out, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    worker.close()
    return 0
