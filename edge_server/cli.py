"""The `edge-server` command: serve (the default), add, pull, list, key, service and worker."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .errors import CatalogError, EdgeError
from .server import SERVING_FILE, local_url

COMMANDS = ("serve", "add", "pull", "list", "key", "service", "worker")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", help="address to bind (EDGE_HOST, default 127.0.0.1; 0.0.0.0 for the LAN)")
    common.add_argument("--port", type=int, help="TCP port (EDGE_PORT, default 8000)")
    common.add_argument("--data-dir", help="models, chats and models.json (EDGE_DATA_DIR, "
                                           "default ~/.local/share/edge-server)")
    common.add_argument("--threads", type=int, help="waitress worker threads (EDGE_THREADS, default 12)")
    common.add_argument("--keep-alive", type=float, help="seconds a model may sit idle before it is unloaded, "
                                                          "0 never (EDGE_KEEP_ALIVE, default 0)")
    common.add_argument("--no-memory-check", dest="memory_check", action="store_false", default=None,
                        help="load models even when their estimate passes the memory available (EDGE_MEMORY_CHECK=0)")
    common.add_argument("--n-threads", type=int, help="CPU threads a model computes with (EDGE_N_THREADS; default "
                                                       "one per performance core)")
    common.add_argument("--parallel", type=int, help="streams one GGUF model answers at once, batched together "
                                                     "(EDGE_PARALLEL; default 4, or fewer if memory is short)")
    common.add_argument("--full", action="store_true", default=None,
                        help="full mode: heavy torch backends from plugins (EDGE_FULL_MODE)")
    common.add_argument("--device", help="full mode: torch device, e.g. cpu, cuda, cuda:1, mps (EDGE_DEVICE; "
                                         "default CUDA when present, else the CPU)")
    common.add_argument("--api-key", help="key clients must send as 'Authorization: Bearer <key>' (EDGE_API_KEY; "
                                          "off loopback a random one is kept in <data-dir>/api_key)")
    common.add_argument("--no-auth", action="store_true", default=None,
                        help="serve a non-loopback address with no key at all (EDGE_NO_AUTH)")
    common.add_argument("--allowed-hosts", help="extra Host names to accept, comma-separated (EDGE_ALLOWED_HOSTS)")
    common.add_argument("--cors-origins", help="browser origins allowed to call the API, comma-separated; '*' for any "
                                               "(EDGE_CORS_ORIGINS, default none)")
    common.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    common.add_argument("--verbose", action="store_true", default=None,
                        help="show llama.cpp's own log lines (loading, caches), kept out of the log by default "
                             "(EDGE_VERBOSE)")
    common.add_argument("--workers", help="edge-server workers to split GGUF models over, host:port,host:port "
                        "(EDGE_WORKERS; they need the same key, --api-key)")
    common.add_argument("--split", choices=("auto", "always"), help="with --workers: split only a model too big for "
                        "this device (auto, the default) or every GGUF model (EDGE_SPLIT)")
    common.add_argument("--log-file", help="also log to this file, rotated at 5 MB, 3 old files kept (EDGE_LOG_FILE)")
    parser = argparse.ArgumentParser(
        prog="edge-server", parents=[common], description="Run GGUF language models on a phone or a Pi, over HTTP.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="A GGUF file you already have (read in place, never copied or deleted):\n"
               "  edge-server serve --model ~/models/my-model.gguf   serve it now\n"
               "  edge-server add ~/models/my-model.gguf             add it to models.json for later")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", parents=[common], help="serve the HTTP API (the default)")
    serve.add_argument("--model", help="start with this model launched: a catalog name, or the path of a GGUF file "
                                       "(added to models.json first, as `add` does)")
    add = sub.add_parser("add", parents=[common], help="add a GGUF file you have to models.json and print how to "
                                                       "launch it (the file is read in place, never deleted)")
    add.add_argument("path", help="the .gguf model file")
    add.add_argument("--name", help="the name to launch it by (default: from the file name)")
    add.add_argument("--mmproj", help="a vision projector .gguf file: the model then reads images")
    add.add_argument("--n-ctx", type=int, help="its default context in tokens (default: EDGE_DEFAULT_N_CTX)")
    pull = sub.add_parser("pull", parents=[common], help="download a model into the store")
    pull.add_argument("model_name")
    listing = sub.add_parser("list", parents=[common], help="list the catalog: installed, size, running")
    listing.add_argument("--url", help="the server to ask what runs (default: the one serving this data dir)")
    key = sub.add_parser("key", parents=[common], help="print the API key kept in the data dir (made if missing)")
    key.add_argument("--rotate", action="store_true", help="replace it with a new random key (restart the server)")
    sub.add_parser("worker", parents=[common], help="lend this device to a server's models (llama.cpp RPC): "
                   "listens on --host (default 0.0.0.0) --port (default 50052), admits only holders of --api-key")
    service = sub.add_parser("service", parents=[common], help="start at boot: a systemd unit, or in Termux a "
                                                               "termux-services service started by Termux:Boot")
    service.add_argument("action", choices=("print", "install", "uninstall", "status"),
                         help="print the files without installing; install, enable and start; undo it; show its state")
    service.add_argument("--user", action="store_true", help="a systemd --user unit instead of a system one")
    service.add_argument("--as-user", help="the account a system unit runs as (default: the one behind sudo)")
    return parser


def _key(overrides: dict, rotate: bool) -> int:
    from .security import read_or_create_key
    from .settings import build_settings

    settings = build_settings(overrides)
    if settings.api_key:
        if rotate:
            print("edge-server: the key is set by --api-key or EDGE_API_KEY; change it there.", file=sys.stderr)
            return 2
        print(settings.api_key)
        return 0
    print(read_or_create_key(settings.key_file, rotate=rotate))
    if rotate:
        print("A new key is kept in the data dir; restart the server to use it.", file=sys.stderr)
    return 0


def _service(args) -> int:
    """Host, port and data dir are fixed in the service from the flags or EDGE_* variables given now."""
    from pathlib import Path

    from . import service

    data_dir = args.data_dir or os.environ.get("EDGE_DATA_DIR")
    return service.main(args.action, user_unit=args.user, as_user=args.as_user,
                        host=args.host or os.environ.get("EDGE_HOST") or "0.0.0.0",
                        port=args.port or int(os.environ.get("EDGE_PORT") or 8000),
                        data_dir=Path(data_dir).expanduser() if data_dir else None)


def _add(overrides: dict, args) -> int:
    from .adding import AddError, add_local, summary
    from .settings import build_settings

    settings = build_settings(overrides)
    if args.n_ctx is not None and args.n_ctx <= 0:
        print("edge-server: --n-ctx must be a positive number of tokens", file=sys.stderr)
        return 2
    try:
        name, info = add_local(settings.data_dir, args.path, args.name, args.mmproj, args.n_ctx)
    except AddError as exc:
        print(f"edge-server: {exc}", file=sys.stderr)
        return 2
    data_dir = f" --data-dir {args.data_dir}" if args.data_dir else ""
    url = local_url(settings.host, settings.port)
    print(f"Added {name} ({summary(info)}) to {settings.data_dir / 'models.json'}.\n"
          f"Its file is read in place and never deleted by the server.\n\n"
          f"Serve it:\n  edge-server serve --model {name}{data_dir}\n"
          f"A server already running reads models.json when it starts: restart it, then launch it with\n"
          f"  curl -X POST {url}/model/launch -H 'Content-Type: application/json' "
          f"-d '{{\"model_name\": \"{name}\"}}'")
    return 0


def _model_to_serve(overrides: dict, model: str) -> str | None:
    """The catalog name `serve --model` launches: a path is added to models.json first (None: it could not be)."""
    from .adding import AddError, add_local
    from .settings import build_settings

    if not (os.sep in model or model.lower().endswith(".gguf") or os.path.isfile(model)):
        return model  # a catalog name: launching it checks it
    try:
        name, _ = add_local(build_settings(overrides).data_dir, model)
    except AddError as exc:
        print(f"edge-server: {exc}", file=sys.stderr)
        return None
    return name


def _progress_line(name: str):
    """A one-line progress report on stderr, redrawn at most once per whole percent."""
    shown = [-1]

    def report(done: int, total: int | None) -> None:
        percent = int(100 * done / total) if total else 0
        if percent != shown[0]:
            shown[0] = percent
            print(f"\r{name}: {_human(done)} of {_human(total)} ({percent}%)", end="", file=sys.stderr, flush=True)
    return report


def _human(size) -> str:
    if not size:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a in COMMANDS for a in argv[:1]) and not any(a in ("-h", "--help") for a in argv):
        argv = ["serve", *argv]
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level, args.log_file or os.environ.get("EDGE_LOG_FILE"))
    from .settings import truthy

    if args.verbose or truthy(os.environ.get("EDGE_VERBOSE", "")):
        logging.getLogger("edge_server.llama_cpp").setLevel(logging.DEBUG)  # backends/llama_logs.py
    overrides = {"host": args.host, "port": args.port, "data_dir": args.data_dir, "threads": args.threads,
                 "n_threads": args.n_threads, "parallel": args.parallel, "keep_alive": args.keep_alive, "memory_check": args.memory_check,
                 "full": args.full, "device": args.device, "api_key": args.api_key, "no_auth": args.no_auth,
                 "allowed_hosts": args.allowed_hosts, "cors_origins": args.cors_origins, "workers": args.workers,
                 "split": args.split}
    if args.command == "key":
        return _key(overrides, args.rotate)
    if args.command == "service":
        return _service(args)
    if args.command == "add":
        return _add(overrides, args)
    if args.command == "worker":
        from .settings import build_settings
        from .worker_cli import run_worker

        return run_worker(build_settings({**overrides, "host": None, "port": None}), args.host, args.port)
    launch_first = None
    if args.command == "serve" and args.model:
        launch_first = _model_to_serve(overrides, args.model)
        if launch_first is None:
            return 2
    from . import create_app

    try:
        app = create_app(overrides)
    except (CatalogError, ValueError) as exc:
        print(f"edge-server: {exc}", file=sys.stderr)
        return 2
    edge = app.extensions["edge_server"]
    if args.command == "serve":
        from .server import serve

        if launch_first:
            log = logging.getLogger("edge_server")
            log.info("launching %s before serving (downloading it first if it is not in the store)", launch_first)
            try:
                edge.manager.launch(launch_first)
            except EdgeError as exc:
                print(f"edge-server: cannot launch {launch_first}: {exc.detail}", file=sys.stderr)
                edge.manager.shutdown()
                return 1
        serve(app, edge.settings)
        return 0
    if args.command == "pull":
        try:
            spec = edge.manager.spec(args.model_name)
            files = edge.store.download(spec, progress=_progress_line(spec.name))
            print(file=sys.stderr)
        except EdgeError as exc:
            print(f"edge-server: {exc.detail}", file=sys.stderr)
            return 1
        print(files.model)
        return 0
    try:
        _print_catalog(edge, args.url)
    except BrokenPipeError:  # `edge-server list | head`
        sys.stderr.close()
    return 0


def _print_catalog(edge, url: str | None) -> None:
    settings = edge.settings
    # The key of this data dir: a server serving the LAN asks for it even from loopback.
    key = edge.api_key or (settings.key_file.read_text().strip() if settings.key_file.exists() else None)
    urls = [url] if url else [_serving_url(settings), local_url(settings.host, settings.port)]
    running, workers = next((found for u in urls if (found := _running_models(u, key))), ({}, []))
    rows = [("NAME", "KIND", "INSTALLED", "RUNNING", "SIZE", "MODE", "DESCRIPTION")]
    for spec in edge.catalog:
        installed = edge.store.files(spec) is not None
        # What is on disk when it is there (a local file has no catalog size), else what a download would take.
        size = edge.store.installed_bytes(spec) if installed else spec.size
        description = spec.description or (f"your file {spec.path}" if spec.is_local else "")
        rows.append((spec.name, spec.kind, "yes" if installed else "no", running.get(spec.name, "no"),
                     _human(size), "heavy" if spec.heavy else "lite", description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]  # every column fits its widest
    for row in rows:
        cells = [cell.rjust(w) if i == 4 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        print("  ".join(cells + [row[-1]]).rstrip())
    for worker in workers:  # EDGE_WORKERS: each as the server sees it now
        free = f", {_human(worker['free_bytes'])} free" if worker.get("free_bytes") else ""
        why = f" ({worker['error']})" if worker.get("error") else ""
        print(f"worker {worker['address']}: {worker['state']}{why}{free}"
              f"{'; runs part of ' + ', '.join(worker['models']) if worker.get('models') else ''}")


def _serving_url(settings) -> str | None:
    """Where the server using this data dir listens: it notes that in server.json while it serves."""
    import json

    try:
        return json.loads((settings.data_dir / SERVING_FILE).read_text())["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _running_models(url: str | None, api_key: str | None) -> tuple[dict[str, str], list[dict]] | None:
    """Ask the server at `url` which models it runs ({name: "yes", or where a split one runs}) and how its
    workers are; None if no server answers (or it refuses)."""
    import requests

    if not url:
        return None
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = requests.get(f"{url.rstrip('/')}/model/list", headers=headers, timeout=3)
        if not r.ok:
            return None
        running = {m["model_name"]: "lost: a worker went" if m.get("lost") else
                   "yes, + " + ", ".join(m["workers"]) if m.get("workers") else "yes"
                   for m in r.json()["models"] if m.get("state") == "running"}
        workers = requests.get(f"{url.rstrip('/')}/health", headers=headers, timeout=5).json().get("workers", [])
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None
    return running, workers


def _setup_logging(level: str, log_file: str | None) -> None:
    """One line per event on stderr and, with a log file, there too (for devices without a journal)."""
    from logging.handlers import RotatingFileHandler

    handlers = [logging.StreamHandler()]
    if log_file:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
            handlers.append(RotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=3, encoding="utf-8"))
        except OSError as exc:  # a read-only place (a hardened service writes only its data dir): say so, go on
            print(f"edge-server: cannot write the log file {log_file}: {exc}; logging to stderr only",
                  file=sys.stderr)
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers)
