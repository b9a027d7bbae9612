"""The small protocol every engine implements; nothing here knows about HTTP."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

TEXT, VISION, IMAGE_OUT, SPEECH_OUT = "text", "vision", "image-out", "speech-out"


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 512  # tokens to generate at most
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0  # OpenAI's: a flat penalty on tokens already in the answer
    frequency_penalty: float = 0.0  # OpenAI's: a penalty growing with how often a token occurred
    seed: int | None = None  # None: a fresh random seed per request
    stop: tuple[str, ...] = ()  # strings that end the answer (not included in it)


@dataclass
class Prepared:
    """A chat rendered for one engine: what it will evaluate, and how many tokens that is."""
    n_tokens: int
    payload: Any  # engine-specific (token ids, prompt text, ...)
    stop: tuple[str, ...] = ()  # stop strings the prompt format itself needs
    images: list = field(default_factory=list)
    text_tokens: int = 0  # of n_tokens, those that are text (the rest are images)
    generated: int | None = None  # tokens generated so far, where the backend counts them (a token may make no
    #                               text of its own: the first bytes of a character); None: one per piece


class LoadedModel(Protocol):
    """Optional too: warm_up() (Backend.load), cache_used and prompt_tokens (counters for status and metrics);
    and a model computing in another process (model_host.py) has elsewhere = True (it gets an engine thread of
    its own), memory_bytes (that process's), workers (the devices it is split over) and lost (None, or why it
    must be launched again: every call then raises ModelLost)."""
    n_ctx: int  # context in tokens, prompt and answer together, that one stream may fill (its streams share it)
    parallel: int  # streams it computes at once (the queue lets that many requests in); 1 if it has no such field
    capabilities: frozenset[str]  # TEXT and VISION here; IMAGE_OUT and SPEECH_OUT models are below

    def prepare(self, messages: list[dict], images: list | None = None) -> Prepared:
        """Render `messages` ([{role, content}]) with the model's chat format, and count the tokens."""

    def prepare_raw(self, text: str) -> Prepared:
        """Tokenize `text` to be continued as it is, with no chat template (text completion)."""

    def stream(self, prepared: Prepared, options: GenerationOptions) -> Iterator[str]:
        """Yield the answer as complete UTF-8 text pieces; closing the iterator stops generation."""

    def close(self) -> None:
        """Free the model's memory."""


@dataclass(frozen=True)
class PictureRequest:
    prompt: str
    width: int  # pixels, already rounded by ImageModel.fit_size
    height: int
    steps: int
    negative_prompt: str = ""
    seed: int | None = None
    guidance_scale: float | None = None  # None: the model's own default


class ImageModel(Protocol):
    """An IMAGE_OUT model (text to image)."""
    capabilities: frozenset[str]

    def fit_size(self, width: int, height: int) -> tuple[int, int]:
        """The nearest size the pipeline can draw."""

    def paint(self, request: PictureRequest, cancelled) -> Iterator[Any]:
        """Yield None after each step and the PIL image last; raise when cancelled() turns true."""

    def close(self) -> None: ...


class SpeechModel(Protocol):
    """A SPEECH_OUT model (text to speech)."""
    capabilities: frozenset[str]
    sampling_rate: int

    def speak(self, text: str) -> Iterator[Any]:
        """Yield the audio as float32 sample arrays in -1..1, one piece (a sentence or so) at a time."""

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def load(self, model_path: Path, *, n_ctx: int, mmproj_path: Path | None = None,
             chat_handler: str | None = None, n_threads: int | None = None, kind: str = TEXT,
             device: str | None = None, parallel: int = 1) -> LoadedModel | ImageModel | SpeechModel:
        """Load a model; n_ctx is already capped to what the model was trained for.

        kind is the catalog's (text, vision, image-out, speech-out); device is --device (None: choose);
        parallel (given only when above 1, and never to a heavy backend): streams the model computes
        together, sharing n_ctx of context. A loaded model may have warm_up() -> Iterator[str], which the
        server runs on the thread that will compute its streams before it reports the model's memory."""

    def trained_context(self, model_path: Path) -> int | None:
        """Return the context length the model was trained with, if the file says."""

    def memory_needs(self, model_path: Path, mmproj_path: Path | None = None):
        """A MemoryNeeds estimate (gguf_header.py) for the memory check before a load, or None."""


class ModelLost(RuntimeError):
    """A model's process or devices are gone (a worker it was split over died); launch it again."""
