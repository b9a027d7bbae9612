"""An answer being streamed: its text through the stop strings and the trim, its token count and finish, and
what closing it stores and frees. Made by the Generator (generation.py); knows nothing of HTTP."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterator

from .backends import GenerationOptions, Prepared
from .backends.base import ModelLost
from .chats import Reservation
from .errors import ContextLengthExceeded, EdgeError, ModelStopped, WorkerLost
from .memory import release_free_heap
from .runtime import RunningModel
from .stop_strings import StopScanner, Trim

log = logging.getLogger("edge_server.generate")


def as_edge_error(exc: BaseException) -> EdgeError:
    if isinstance(exc, EdgeError):
        return exc
    if isinstance(exc, ModelLost):
        return WorkerLost(str(exc))
    if isinstance(exc, ValueError) and ("context" in str(exc).lower() or "exceed" in str(exc).lower()):
        return ContextLengthExceeded(f"The prompt does not fit in the model's context: {exc}")
    log.error("generation failed", exc_info=exc)
    return EdgeError("The model failed to generate an answer.", status=500, code="generation_failed")


class Answer:
    """An answer being streamed. Iterate for text; closing it (or the end) stores the turn and frees the model."""

    def __init__(self, generator: Any, running: RunningModel, chat_id: str | None, prompt: str,
                 prepared: Prepared, options: GenerationOptions, abandoned: Callable[[], bool], n_images: int,
                 finish: bool, stop_asked: threading.Event, asked_at: float, release: Callable[[], None],
                 load_seconds: float = 0.0, reservation: Reservation | None = None, trim: bool = True):
        """generator: the Generator that made it (generation.py: its chats, metrics and limits).
        chat_id None: a stateless request (the OpenAI and Ollama dialects): nothing is stored.
        release gives back the request's place at the model; reservation is the chat's place (chats.py).
        trim: the answer starts at its first visible character and ends at its last (stop_strings.Trim), in
        every dialect and in the stored chat; off for a raw text continued as it is, where a leading space is
        part of the continuation."""
        self._trim = trim
        self._reservation = reservation
        self._gen, self._running, self._chat_id, self._prompt = generator, running, chat_id, prompt
        self._release = release
        self._n_images, self._finish = n_images, finish
        # finish: the client wants the whole answer stored even if it goes away (a phone's screen locks).
        self._abandoned = (lambda: False) if finish else abandoned
        self._parts: list[str] = []
        self._first: str | None = None  # computed before the response starts
        self._finished = False
        self._stop_asked = stop_asked  # POST /generate/stop: end now, even an answer set to finish
        self._started = time.perf_counter()
        self._asked_at = asked_at  # when the request reached the generation layer (queue wait included)
        self._tokens, self._first_at, self._last_at = 0, None, None
        self.prompt_tokens = prepared.n_tokens
        self._budget = min(options.max_new_tokens, running.model.n_ctx - prepared.n_tokens)
        self._load_seconds = load_seconds
        self._stopped_by_string = False
        self.failed: EdgeError | None = None  # the model failed after the stream began (it ended early)
        self._chunks = self._produce(prepared, options)

    @property
    def completion_tokens(self) -> int:
        return self._tokens

    @property
    def finish_reason(self) -> str:
        """"length" when the answer used all the tokens it could have, else "stop" (end of text, a stop string)."""
        return "length" if not self._stopped_by_string and self._tokens >= self._budget else "stop"

    @property
    def durations(self) -> dict:
        """Nanoseconds, as Ollama reports them: in all, loading the model, reading the prompt, generating."""
        now, first = time.perf_counter(), self._first_at or time.perf_counter()
        ns = lambda seconds: int(max(seconds, 0) * 1e9)  # noqa: E731
        return {"total": ns(now - self._asked_at), "load": ns(self._load_seconds),
                "prompt": ns(first - self._started), "eval": ns((self._last_at or first) - first)}

    def __iter__(self) -> Iterator[str]:
        return self

    def prime(self) -> None:
        """Compute the first piece now, so a failing prompt (too long, bad image) gets a real status."""
        try:
            self._first = next(self._chunks)
        except StopIteration:
            if self.failed is not None:  # stopped before a word was said: nothing is cut, say so with a status
                self.close()
                raise self.failed from None
        except BaseException as exc:
            self.close()
            raise as_edge_error(exc) from exc

    def __next__(self) -> str:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except ModelLost as exc:
            self.failed = as_edge_error(exc)  # the dialects end the stream with it, the seed endpoints cut it
            self.close()
            raise StopIteration from None
        except Exception:
            # The status line is sent: end the stream cleanly with what was said, and log why.
            log.exception("generation failed mid-stream on %s", self._running.spec.name)
            self.failed = EdgeError("The model failed while answering.", status=500, code="generation_failed")
            self.close()
            raise StopIteration from None
        except BaseException:
            self.close()
            raise

    def _produce(self, prepared: Prepared, options: GenerationOptions) -> Iterator[str]:
        scanner = StopScanner(tuple(options.stop) + prepared.stop)
        trim = Trim().feed if self._trim else (lambda text: text)
        model = self._running.model
        pieces = self._running.engine.submit(lambda: model.stream(prepared, options))
        try:
            for piece in pieces:
                if piece:  # text; empty pieces mark a stretch of prompt read
                    self._last_at = time.perf_counter()
                    self._first_at = self._first_at or self._last_at
                    self._tokens = self._tokens + 1 if prepared.generated is None else prepared.generated
                text, stopped = scanner.feed(piece)
                text = trim(text)
                if text:
                    self._parts.append(text)
                    yield text
                self._stopped_by_string = stopped
                if not stopped and self._running.stopping.is_set():
                    # Not a finish: the dialects end the stream with an error, the seed endpoints cut it.
                    self.failed = ModelStopped(f"Model {self._running.spec.name!r} was stopped (killed, reloaded, "
                                               "deleted or the server stopped) while answering; the answer is "
                                               "cut short.")
                    return
                if stopped or self._stop_asked.is_set() or self._abandoned():
                    return
            if prepared.generated is not None:  # tokens after the last text (a character's first bytes) count too
                self._tokens = prepared.generated
            tail = trim(scanner.flush())  # whitespace still held back by Trim is the answer's end: dropped
            if tail:
                self._parts.append(tail)
                yield tail
        finally:
            pieces.close()

    def _drain(self) -> None:
        """Generate the rest of the answer with nobody reading (it is stored when done)."""
        try:
            for _ in self._chunks:
                pass
        except Exception:
            log.exception("finishing an answer for a departed client failed on %s", self._running.spec.name)

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def close(self) -> None:
        """Stop generating; keep what was said so far (a cut-off answer stays in the chat as it was seen)."""
        if self._finished:
            return
        self._finished = True
        try:
            if self._finish:
                self._drain()
            self._chunks.close()
            answer = self.text
            # An empty answer is not stored: two user turns in a row break many chat templates.
            if answer.strip() and self._chat_id is not None:
                cut_at = self._tokens if self.finish_reason == "length" else None
                self._gen.chats.add_exchange(self._running.spec.name, self._chat_id, self._prompt, answer,
                                             n_images=self._n_images, since=self._reservation, cut_at=cut_at)
            log.info("answered %s/%s: %d chars in %.2fs", self._running.spec.name, self._chat_id or "-", len(answer),
                     time.perf_counter() - self._started)
            self._gen.metrics.answered(self._running.spec.name, self._tokens,
                                       self._first_at and self._first_at - self._asked_at,
                                       (self._last_at or 0) - (self._first_at or 0))
        finally:
            if self._chat_id is not None:
                self._gen.forget(self._running.spec.name, self._chat_id, self._stop_asked)
            if self._reservation is not None:
                self._reservation.release()
            self._release()
            self._gen.limit.give_back()
            if self._n_images:
                release_free_heap()  # decoding and encoding pictures leaves big freed blocks in the heap
