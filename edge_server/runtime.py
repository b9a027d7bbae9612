"""Running models: launch, kill, delete and status. One object per app, never module state."""
from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field

from .backends import BackendRegistry, LoadedModel
from .catalog import Catalog, ModelSpec
from .cpu import default_threads
from .engine import Engine
from .errors import EdgeError, InvalidRequest, ModelLoadError, ModelNotInstalled, ModelNotRunning
from .memory import release_free_heap, resident_memory
from .memory_check import CTX_BLOCK, check_memory
from .metrics import Metrics
from .queueing import ModelSlot, SlowWork
from .settings import Settings
from .store import ModelStore

log = logging.getLogger("edge_server.models")
MAX_PARALLEL = 16


@dataclass
class RunningModel:
    spec: ModelSpec
    model: LoadedModel
    slot: ModelSlot
    requested: int  # the n_ctx asked for, before capping to the trained context
    parallel: int | None = None  # the streams asked for (None: chosen from the memory)
    keep_alive: float = 0  # seconds idle before it is unloaded (0: never)
    force: bool = False  # launched past the memory check (a reload after an idle unload is too)
    stopping: threading.Event = field(default_factory=threading.Event)
    engine: Engine | None = None  # the thread its computations run on
    memory: int | None = None  # bytes the process grew by when it loaded (weights read, caches made)


@dataclass(frozen=True)
class Unloaded:
    """A model unloaded for being idle: how to load it again, and when it went."""
    n_ctx: int
    parallel: int | None
    keep_alive: float
    force: bool
    at: float


class ModelManager:
    def __init__(self, settings: Settings, catalog: Catalog, store: ModelStore, registry: BackendRegistry,
                 metrics: Metrics):
        self.settings, self.catalog, self.store, self.registry, self.metrics = settings, catalog, store, registry, metrics
        self._running: dict[str, RunningModel] = {}
        self._busy: dict[str, dict] = {}  # name -> {"state": downloading|loading, bytes...}
        self._locks: dict[str, threading.Lock] = {}
        self._cancels: dict[str, threading.Event] = {}  # name -> set to cancel its download
        self._unloaded: dict[str, Unloaded] = {}  # unloaded for being idle; the next request loads them again
        self._reaper: threading.Thread | None = None
        self._closing = threading.Event()
        self._guard = threading.Lock()
        self.engine = Engine()  # the one thread that computes with llama.cpp; see engine.py
        # Heavy (torch) models compute on a thread of their own: one diffusion step can take seconds, and a
        # picture must not hold the GGUF models' streams. torch keeps its own OpenMP team, apart from llama.cpp's.
        self.heavy_engine = Engine()
        self.slow_work = SlowWork(settings.max_streams)  # streams, link fetches and downloads share it
        if settings.n_threads:
            self.n_threads, self.threads_why = settings.n_threads, "set by --n-threads or EDGE_N_THREADS"
        else:
            self.n_threads, self.threads_why = default_threads()

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def spec(self, name) -> ModelSpec:
        """Return a spec launchable in this mode (heavy ones need full mode)."""
        spec = self.catalog.get(name)
        if spec.heavy and not self.settings.full:
            raise EdgeError(f"Model {name!r} is heavy and needs full mode (--full).", status=400,
                            code="full_mode_required")
        if spec.backend not in self.registry:
            raise EdgeError(f"No backend {spec.backend!r} is installed for model {name!r}.", status=400,
                            code="backend_unavailable")
        return spec

    def _resolve_n_ctx(self, spec: ModelSpec, n_ctx) -> int:
        if n_ctx is None or n_ctx == -1:
            n_ctx = spec.n_ctx or self.settings.default_n_ctx
        elif isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 16:
            raise InvalidRequest("n_ctx must be an integer of at least 16, or -1 for the model's default.")
        # llama.cpp works in whole blocks of 256 and would silently use more than llama-cpp-python's
        # buffers hold; ask for the size it will use (GET /model/status reports it).
        return -(-n_ctx // CTX_BLOCK) * CTX_BLOCK

    def _resolve_parallel(self, spec: ModelSpec, parallel) -> int | None:
        if spec.heavy:
            return 1  # torch models answer one request at a time
        parallel = self.settings.parallel if parallel is None else parallel
        if parallel is not None and (isinstance(parallel, bool) or not isinstance(parallel, int)
                                     or not 1 <= parallel <= MAX_PARALLEL):
            raise InvalidRequest(f"parallel must be an integer from 1 to {MAX_PARALLEL}.")
        return parallel

    def launch(self, name, n_ctx=None, keep_alive: float | None = None, force: bool = False,
               download: bool = True, parallel: int | None = None) -> RunningModel:
        """Download if needed, then load; a second launch with the same n_ctx (and parallel, if given) only
        sets keep_alive, unless the model is lost (a worker it was split over went).

        keep_alive: seconds idle before the model is unloaded (0: never; None: the setting). An
        unloaded model is loaded again by the next request that needs it. Without `download`, a model
        not in the store is model_not_installed (the dialects load models, but never download them)."""
        spec = self.spec(name)
        wanted = self._resolve_n_ctx(spec, n_ctx)
        parallel = self._resolve_parallel(spec, parallel)
        keep_alive = self.settings.keep_alive if keep_alive is None else keep_alive
        self._refuse_while_downloading(spec.name)
        with self._lock(spec.name):
            try:
                files = self.store.files(spec)
                if files is None and not download:
                    raise ModelNotInstalled(f"Model {spec.name!r} is not installed; download it first (POST "
                                            "/model/launch, POST /api/pull or the web page).")
                files = files or self._download(spec)
                current = self._running.get(spec.name)
                if (current is not None and current.requested == wanted and parallel in (None, current.slot.capacity)
                        and not getattr(current.model, "lost", None)):  # a lost model (its worker went) loads again
                    current.keep_alive = keep_alive
                    self._watch_idle()
                else:
                    current = self._load(spec, files, wanted, parallel, keep_alive, force, current)
                self._unloaded.pop(spec.name, None)
                return current
            finally:
                self._busy.pop(spec.name, None)

    def _load(self, spec: ModelSpec, files, wanted: int, parallel: int | None, keep_alive: float, force: bool,
              current: RunningModel | None) -> RunningModel:
        """Load the model (in place of `current`, if running with another context); the caller holds its lock.

        parallel None: memory_check.DEFAULT_PARALLEL streams, or as many as the available memory holds (at least one)."""
        backend = self.registry.get(spec.backend)
        try:
            trained = backend.trained_context(files.model)
        except (ValueError, OSError) as exc:
            raise ModelLoadError(f"Model {spec.name!r} could not be loaded: {exc}") from exc
        n = min(wanted, trained) if trained else wanted
        running_copy = (current.model.n_ctx, current.slot.capacity) if current is not None else None
        streams = check_memory(spec, backend, files, n, parallel, self.settings, not force, running_copy)
        self._busy[spec.name] = {"state": "loading"}
        if current is not None:
            self._stop(current)
        try:
            log.info("loading %s (n_ctx=%d, parallel=%d)", spec.name, n, streams)
            started, before = time.perf_counter(), resident_memory()
            model = backend.load(files.model, n_ctx=n, mmproj_path=files.mmproj,
                                 chat_handler=spec.chat_handler, n_threads=self.n_threads, kind=spec.kind,
                                 device=self.settings.device, **({"parallel": streams} if streams > 1 else {}))
            # A model computing in another process (split across workers) gets a thread of its own to wait on.
            engine = Engine() if getattr(model, "elsewhere", False) else self.heavy_engine if spec.heavy else self.engine
            if hasattr(model, "warm_up"):
                list(engine.submit(model.warm_up))  # on the thread that will compute its streams
            self.metrics.loads.labels(spec.name).observe(time.perf_counter() - started)
        except (ValueError, RuntimeError, OSError, ImportError) as exc:  # ImportError: a heavy library is missing
            log.warning("loading %s failed: %s", spec.name, exc)
            raise ModelLoadError(f"Model {spec.name!r} could not be loaded: {exc}") from exc
        slot = ModelSlot(spec.name, self.settings.queue_size, capacity=getattr(model, "parallel", 1))
        after = resident_memory()
        memory = max(0, after - before) if after and before else None
        running = RunningModel(spec, model, slot, wanted, parallel, keep_alive, force, engine=engine,
                               memory=getattr(model, "memory_bytes", memory))
        self._running[spec.name] = running
        log.info("running %s", spec.name)
        self._watch_idle()
        return running

    def pull(self, name) -> None:
        """Download a model into the store without loading it (`edge-server pull`, POST /api/pull)."""
        spec = self.spec(name)
        self._refuse_while_downloading(spec.name)
        with self._lock(spec.name):
            try:
                if self.store.files(spec) is None:
                    self._download(spec)
            finally:
                self._busy.pop(spec.name, None)

    def _reload(self, name: str) -> RunningModel:
        """Load again a model unloaded for being idle, as it was launched; never downloads."""
        spec = self.spec(name)
        with self._lock(spec.name):  # waits for an unload or a reload in progress
            running = self._running.get(spec.name)
            if running is not None:
                return running
            unloaded, files = self._unloaded.get(spec.name), self.store.files(spec)
            if unloaded is None or files is None:  # killed or deleted meanwhile
                raise ModelNotRunning(f"Model {name!r} is not running; POST /model/launch first.")
            log.info("loading %s again: a request needs it", spec.name)
            try:
                running = self._load(spec, files, unloaded.n_ctx, unloaded.parallel, unloaded.keep_alive,
                                     unloaded.force, None)
            finally:
                self._busy.pop(spec.name, None)
            self._unloaded.pop(spec.name, None)
            return running

    def _download(self, spec: ModelSpec):
        """Download, holding a place among the server's slow work; kill or delete cancels it."""
        cancel = threading.Event()
        self._busy[spec.name] = {"state": "downloading", "bytes_done": 0, "bytes_total": spec.size}
        self._cancels[spec.name] = cancel
        counted = self.metrics.downloaded.labels(spec.name)
        last = [None]  # bytes reported last; the first report is where a resume starts, not new bytes

        def progress(done: int, total: int | None) -> None:
            if last[0] is not None and done > last[0]:
                counted.inc(done - last[0])
            last[0] = done
            self._busy[spec.name].update(bytes_done=done, bytes_total=total)

        try:
            with self.slow_work.held():
                return self.store.download(spec, cancelled=cancel.is_set, progress=progress)
        finally:
            self._cancels.pop(spec.name, None)

    def _refuse_while_downloading(self, name: str) -> None:
        """A second launch during a download answers at once rather than holding a worker until it ends."""
        busy = self._busy.get(name)
        if name in self._cancels and busy:
            done, total = busy.get("bytes_done") or 0, busy.get("bytes_total")
            share = f" ({100 * done // total}% of {total} bytes)" if total else ""
            raise EdgeError(f"Model {name!r} is downloading{share}; poll GET /model/status until it runs.",
                            status=202, code="downloading")

    def get(self, name) -> RunningModel:
        """The running model (its idle time starts again); one unloaded for being idle is loaded again."""
        running = self._running.get(name) if isinstance(name, str) else None
        if running is not None and running.slot.touch():
            return running
        self.catalog.get(name)  # unknown names answer model_not_found
        if running is None and name not in self._unloaded:
            raise ModelNotRunning(f"Model {name!r} is not running; POST /model/launch first.")
        return self._reload(name)  # being unloaded, or unloaded: wait for its lock, then load

    def set_keep_alive(self, name: str, keep_alive: float) -> None:
        """Set a running model's idle unload (seconds, 0 never), as an Ollama request's keep_alive does."""
        running = self._running.get(name)
        if running is not None:
            running.keep_alive = keep_alive
            self._watch_idle()

    def _watch_idle(self) -> None:
        """Start the thread that unloads idle models, once one has a keep-alive."""
        with self._guard:
            if self._reaper is None and any(r.keep_alive for r in list(self._running.values())):
                self._reaper = threading.Thread(target=self._unload_idle, name="idle-unload", daemon=True)
                self._reaper.start()

    def _unload_idle(self) -> None:
        while not self._closing.wait(0.5):
            for running in list(self._running.values()):
                lock = self._lock(running.spec.name)
                if not running.keep_alive or not lock.acquire(blocking=False):
                    continue  # never unloaded, or being launched, killed or deleted right now
                try:
                    if self._running.get(running.spec.name) is running and running.slot.close_if_idle(
                            running.keep_alive):
                        # Noted first: a request arriving meanwhile waits for the lock, then loads it again.
                        self._unloaded[running.spec.name] = Unloaded(running.requested, running.parallel,
                                                                     running.keep_alive, running.force, time.time())
                        self._stop(running)
                        log.info("unloaded %s after %g s idle", running.spec.name, running.keep_alive)
                except Exception:  # keep watching the other models
                    log.exception("unloading %s failed", running.spec.name)
                finally:
                    lock.release()

    def cancel_download(self, name) -> bool:
        """Cancel the model's download if one runs (the part kept on disk resumes on the next launch)."""
        cancel = self._cancels.get(name)
        if cancel is not None:
            cancel.set()
        return cancel is not None

    def kill(self, name) -> None:
        """Stop a running model, or cancel its download (the part kept on disk resumes on the next launch)."""
        self.catalog.get(name)
        if self.cancel_download(name):
            return
        with self._lock(name):
            running = self._running.get(name)
            if running is None:
                if self._unloaded.pop(name, None):
                    return  # unloaded for being idle: now it stays unloaded
                raise ModelNotRunning(f"Model {name!r} is not running.")
            self._stop(running)

    def _stop(self, running: RunningModel) -> None:
        """End its streams, wait for the current generation to leave, then free the memory."""
        running.stopping.set()
        running.slot.close()
        self._running.pop(running.spec.name, None)
        running.model.close()
        if running.engine not in (self.engine, self.heavy_engine):
            running.engine.stop()
        gc.collect()
        release_free_heap()
        log.info("stopped %s", running.spec.name)

    def delete(self, name) -> None:
        spec = self.catalog.get(name)
        cancel = self._cancels.get(name)
        if cancel is not None:
            cancel.set()  # the launch lets go of the lock at its next piece
        with self._lock(name):
            self._unloaded.pop(spec.name, None)
            running = self._running.get(name)
            if running is not None:
                self._stop(running)
            self.store.delete(spec)

    def active(self) -> list[str]:
        return list(self._running)

    def status(self, name) -> dict:
        spec = self.catalog.get(name)
        body = {"model_name": spec.name, "state": "absent", "bytes_done": None, "bytes_total": spec.size}
        busy = self._busy.get(spec.name)
        running = self._running.get(spec.name)
        if busy is not None:
            body.update(busy)
        elif running is not None:
            body.update(state="running", n_ctx=getattr(running.model, "n_ctx", None), n_threads=self.n_threads,
                        parallel=running.slot.capacity, active=running.slot.active, queued=running.slot.waiting,
                        keep_alive=running.keep_alive, memory_bytes=running.memory)
            if hasattr(running.model, "cache_used"):
                body["cache_used"] = running.model.cache_used
            if hasattr(running.model, "workers"):  # split across workers (backends/llamacpp_split.py)
                body.update(workers=running.model.workers, lost=running.model.lost)
        elif self.store.files(spec) is not None:
            body["state"] = "installed"
            if spec.name in self._unloaded:
                body["idle_unloaded_at"] = int(self._unloaded[spec.name].at)
        if body["state"] in ("installed", "running"):
            body["bytes_done"] = body["bytes_total"] = self.store.installed_bytes(spec)
        return body

    def listing(self) -> list[dict]:
        """Every model launchable in this mode, with what it is and its state (as status() tells it)."""
        return [{**self.status(name), "kind": spec.kind, "vision": spec.kind == "vision", "heavy": spec.heavy,
                 "size": spec.size, "description": spec.description, "local": spec.is_local}
                for name in self.catalog.names(self.settings.full) for spec in [self.catalog.get(name)]]

    def running(self):
        """(name, requests waiting, (prompt tokens evaluated, found in the cache) or None) of each running model."""
        return [(name, running.slot.waiting, getattr(running.model, "prompt_tokens", None))
                for name, running in list(self._running.items())]

    def split_over(self) -> dict[str, list[str]]:
        """{worker address: the running models split over it}."""
        found: dict[str, list[str]] = {}
        for name, running in list(self._running.items()):
            for address in getattr(running.model, "workers", ()):
                found.setdefault(address, []).append(name)
        return found

    def stop_streams(self) -> None:
        """Ask every stream to end now (server shutdown); the models stay loaded."""
        for running in list(self._running.values()):
            running.stopping.set()

    def shutdown(self) -> None:
        self._closing.set()
        if self._reaper is not None:
            self._reaper.join(timeout=30)
        self.stop_streams()
        for name in list(self._running):
            with self._lock(name):
                running = self._running.get(name)
                if running is not None:
                    self._stop(running)
        self.engine.stop()
        self.heavy_engine.stop()
