"""The generation layer: a chat turn in, a stream of text out. Knows nothing of HTTP."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from typing import Callable

from .answer import Answer, as_edge_error
from .backends import IMAGE_OUT, SPEECH_OUT, TEXT, VISION, GenerationOptions, Prepared
from .chats import ChatStore, Reservation
from .errors import Busy, ClientGone, ContextLengthExceeded, EdgeError, ModelNotRunning, WorkerLost
from .metrics import Metrics
from .runtime import ModelManager, RunningModel
from .settings import Settings

log = logging.getLogger("edge_server.generate")
CANNOT = {TEXT: ("does not write text", "model_not_text"), VISION: ("does not read images", "model_not_multimodal"),
          IMAGE_OUT: ("does not draw pictures", "model_not_image"), SPEECH_OUT: ("does not speak", "model_not_speech")}


def _messages(chat: dict, turns: list[dict], prompt) -> list[dict]:
    system = [{"role": "system", "content": chat["system_prompt"]}] if chat["system_prompt"] else []
    return system + [{"role": t["role"], "content": t["content"]} for t in turns] + [{"role": "user", "content": prompt}]


class Generator:
    def __init__(self, settings: Settings, manager: ModelManager, chats: ChatStore, metrics: Metrics):
        self.settings, self.manager, self.chats, self.metrics = settings, manager, chats, metrics
        self.limit = manager.slow_work
        # The stop flag of each request being answered (or waiting for its model), by (model, chat_id).
        self._live: dict[tuple[str, str], set[threading.Event]] = {}
        self._live_lock = threading.Lock()

    def start(self, model_name, prompt: str, options: GenerationOptions, chat_id: str = "default",
              images: list[Callable[[], bytes]] | None = None, abandoned: Callable[[], bool] | None = None,
              finish: bool = False) -> Answer:
        """Queue for the model and render the chat; errors raise here, before any byte is streamed.

        `images` are loaders (fetch a link, decode an upload), called once this request holds a place
        among the server's slow work but before it waits for the model. With `finish`, a client that
        goes away does not stop the answer: it is generated to the end and stored.
        """
        asked_at = time.perf_counter()
        abandoned = abandoned or (lambda: False)
        size = len(prompt.encode("utf-8"))
        if size > self.settings.max_prompt_bytes:  # before tokenizing: a huge text would hold the model
            raise EdgeError(f"The prompt is {size} bytes; the limit is {self.settings.max_prompt_bytes}.",
                            status=413, code="prompt_too_large")
        running = self.require(model_name, vision=bool(images))
        name = running.spec.name
        stop_asked = threading.Event()
        with ExitStack() as undo:  # if anything below fails, give back what was taken
            reservation = self.chats.reserve(name, chat_id, size)  # the chat's place, before waiting for anything
            undo.callback(reservation.release)
            self._remember(name, chat_id, stop_asked)
            undo.callback(self.forget, name, chat_id, stop_asked)
            images, release = self._admit(undo, running, lambda: abandoned() or stop_asked.is_set(), images)
            prepared = self._fit(running, chat_id, self.chats.get(name, chat_id), prompt, options, images,
                                 reservation)
            if stop_asked.is_set():
                raise ClientGone("The answer was stopped before it began.")
            undo.pop_all()  # from here on the Answer gives them back when it closes
        answer = Answer(self, running, chat_id, prompt, prepared, options, abandoned, len(images or ()), finish,
                        stop_asked, asked_at, release, reservation=reservation)
        answer.prime()
        return answer

    def complete(self, model_name, messages: list[dict] | None, options: GenerationOptions,
                 images: list[Callable[[], bytes]] | None = None, raw: str | None = None,
                 abandoned: Callable[[], bool] | None = None, n_ctx: int | None = None,
                 keep_alive: float | None = None) -> Answer:
        """A stateless answer, for the OpenAI and Ollama dialects: the whole conversation comes with the
        request (or, with `raw`, a text to continue as it is), and nothing is stored.

        Same queue, engine, stop strings and stop on disconnect as `start`. A model that is installed but
        not running is loaded first (n_ctx: the request's, else the catalog's default), as Ollama does."""
        asked_at = time.perf_counter()
        abandoned = abandoned or (lambda: False)
        size = len((raw if raw is not None else "".join(m["content"] for m in messages)).encode("utf-8"))
        if size > self.settings.max_prompt_bytes:
            raise EdgeError(f"The prompt is {size} bytes; the limit is {self.settings.max_prompt_bytes}.",
                            status=413, code="prompt_too_large")
        if raw is not None and images:
            raise EdgeError("Images need the model's chat template; send them without raw.", status=400,
                            code="invalid_request")
        running, load_seconds = self.ready(model_name, n_ctx, keep_alive)
        self.require(running.spec.name, vision=bool(images))
        with ExitStack() as undo:
            images, release = self._admit(undo, running, abandoned, images)
            model = running.model
            prepared = model.prepare_raw(raw) if raw is not None else model.prepare(messages, images)
            if prepared.n_tokens >= model.n_ctx:
                raise ContextLengthExceeded(
                    f"The prompt is {prepared.n_tokens} tokens; the model's context holds {model.n_ctx}.")
            undo.pop_all()
        answer = Answer(self, running, None, "", prepared, options, abandoned, len(images), False,
                        threading.Event(), asked_at, release, load_seconds, trim=raw is None)
        answer.prime()
        return answer

    def ready(self, model_name, n_ctx: int | None = None, keep_alive: float | None = None) -> tuple[RunningModel, float]:
        """The running model, loaded first if it is installed but not running; and the seconds loading took.

        `keep_alive` (None: leave it) becomes the model's idle unload, also when it was running already."""
        try:
            running = self.manager.get(model_name)
            if keep_alive is not None:
                self.manager.set_keep_alive(running.spec.name, keep_alive)
            return running, 0.0
        except ModelNotRunning:
            began = time.perf_counter()
            running = self.manager.launch(model_name, n_ctx, keep_alive, download=False)
            return running, time.perf_counter() - began

    def _admit(self, undo: ExitStack, running: RunningModel, gone: Callable[[], bool],
               images=()) -> tuple[list[bytes], Callable[[], None]]:
        """Take a place among the server's slow work, load the images, then wait for a place at the model
        (FIFO; 503 busy past the queue; a request with images takes the whole model: the multimodal path
        does not batch); `undo` gives both back if what follows fails. Returns the images and the function
        that gives the model's place back."""
        self.limit.take()
        undo.callback(self.limit.give_back)
        loaded = [load() for load in images or ()]
        try:
            release = running.slot.acquire(gone, whole=bool(loaded))
        except Busy:
            self.metrics.refusals.labels(running.spec.name).inc()
            raise
        undo.callback(release)
        return loaded, release

    def stop(self, model_name: str, chat_id: str) -> bool:
        """End the answers for this chat: within a token, or before they begin if still waiting for the model.

        What was said so far is kept, as when a client disconnects."""
        with self._live_lock:
            flags = list(self._live.get((model_name, chat_id), ()))
        for flag in flags:
            flag.set()
        return bool(flags)

    def answering(self, model_name: str, chat_id: str) -> bool:
        """Whether an answer for this chat is being generated or waits for its model (it is stored when done)."""
        with self._live_lock:
            return (model_name, chat_id) in self._live

    def _remember(self, model_name: str, chat_id: str, stop_asked: threading.Event) -> None:
        with self._live_lock:
            self._live.setdefault((model_name, chat_id), set()).add(stop_asked)

    def forget(self, model_name: str, chat_id: str, stop_asked: threading.Event) -> None:
        with self._live_lock:
            live = self._live.get((model_name, chat_id), set())
            live.discard(stop_asked)
            if not live:
                self._live.pop((model_name, chat_id), None)

    def require(self, model_name, vision: bool = False, need: str = TEXT) -> RunningModel:
        """Return the running model, or raise the error a request for it should get."""
        running = self.manager.get(model_name)
        if getattr(running.model, "lost", None):
            raise WorkerLost(running.model.lost)
        for capability in (need, VISION) if vision else (need,):
            if capability not in running.model.capabilities:
                cannot, code = CANNOT[capability]
                raise EdgeError(f"Model {model_name!r} {cannot}.", status=400, code=code)
        return running

    def produce(self, model_name, need: str, work: Callable, abandoned: Callable[[], bool] | None = None):
        """Run `work(model, cancelled)` for a picture or speech, queued for the model like an answer.

        `work` returns an iterator computed on the engine thread: each item is a step (None) or a
        piece of the result; the pieces are returned as a list. The client leaving or a kill ends
        it at its next step (499 client_disconnected); a step that takes long (a whole diffusion
        pipeline call) checks `cancelled()` itself."""
        abandoned = abandoned or (lambda: False)
        running = self.require(model_name, need=need)
        with ExitStack() as undo:
            self._admit(undo, running, abandoned)
            cancelled = lambda: abandoned() or running.stopping.is_set()  # noqa: E731
            job = running.engine.submit(lambda: work(running.model, cancelled))
            undo.callback(job.close)
            pieces, failure, complete = [], None, False
            try:
                for piece in job:
                    if cancelled():
                        break  # closing the job (undo) stops the engine at the model's next step
                    if piece is not None:
                        pieces.append(piece)
                else:
                    complete = True
            except Exception as exc:
                failure = None if cancelled() else as_edge_error(exc)
                exc.__traceback__ = None  # its frames hold the model (a pipeline's latents): a kill must free them
        if complete:
            return pieces
        if running.stopping.is_set():
            raise ModelNotRunning(f"Model {running.spec.name!r} was stopped before the result was ready.")
        raise failure or ClientGone("The request ended before its result was ready.")

    def _fit(self, running: RunningModel, chat_id: str, chat: dict, prompt: str, options: GenerationOptions,
             images, reservation: Reservation | None = None) -> Prepared:
        """Render the chat from its context start; when that no longer fits, move the start on.

        The start moves far enough that the chat fills about half of what is left for the prompt, and
        stays there for the turns after: each of them then begins with the same tokens and reuses the
        model's cache. (Dropping one exchange per turn shifted the prompt every turn, and every turn
        re-read the whole context: 0.4 s became 5 s on Gemma at n_ctx 2048.)
        """
        model, turns = running.model, chat["turns"]
        pairs = len(turns) // 2
        start = min(chat.get("context_start", 0), pairs)
        budget = model.n_ctx - options.max_new_tokens

        def render(drop: int) -> Prepared:
            return model.prepare(_messages(chat, turns[2 * drop:], prompt), images)

        current = render(start)
        if current.n_tokens <= budget:
            return current  # the usual case: one render
        minimal = render(pairs) if pairs > start else current
        if minimal.n_tokens >= model.n_ctx:
            raise ContextLengthExceeded(
                f"The prompt is {minimal.n_tokens} tokens; the model's context holds {model.n_ctx}.")

        def fewest(limit: int) -> tuple[int, Prepared]:
            """The fewest exchanges left out for the prompt to fit `limit` (fewer out always means longer)."""
            best, lo, hi = (pairs, minimal), start + 1, pairs - 1
            while lo <= hi:
                drop = (lo + hi) // 2
                candidate = render(drop)
                if candidate.n_tokens <= limit:
                    best, hi = (drop, candidate), drop - 1
                else:
                    lo = drop + 1
            return best

        drop, prepared = fewest(max(budget // 2, minimal.n_tokens))
        if drop == pairs and pairs > start:  # the newest exchange alone is over half: keep what fits at all
            drop, prepared = fewest(budget)
        if drop != start:
            self.chats.set_context_start(running.spec.name, chat_id, drop, len(turns), since=reservation)
        return prepared
