"""The lite backend: GGUF models in llama-cpp-python. llama_cpp is imported on first load only."""
from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
import threading
from pathlib import Path
from typing import Iterator

from ..prompts import PLAIN_STOP, plain_prompt
from .base import TEXT, VISION, GenerationOptions, Prepared
from .gguf_header import context_length, memory_needs
from .llamacpp_batch import Batch
from .llamacpp_sampling import sampler

log = logging.getLogger("edge_server.llamacpp")

NAME = "llama-cpp"


class LlamaCppBackend:
    name = NAME

    def trained_context(self, model_path: Path) -> int | None:
        return context_length(model_path)

    def memory_needs(self, model_path: Path, mmproj_path: Path | None = None):
        # llama.cpp's libraries are not counted: the log hook (llama_logs.py) maps them as the backend is made
        return memory_needs(model_path, mmproj_path.stat().st_size if mmproj_path else 0)

    def load(self, model_path: Path, *, n_ctx: int, mmproj_path: Path | None = None,
             chat_handler: str | None = None, n_threads: int | None = None, kind: str = TEXT,
             device: str | None = None, parallel: int = 1, offload: dict | None = None) -> "LlamaCppModel":
        """kind follows from the files here (a projector means vision); device: llama.cpp runs on the CPU;
        parallel: streams decoded together, sharing a cache of n_ctx tokens; offload: n_gpu_layers and
        tensor_split, for a model split across workers (model_host_child.py)."""
        from llama_cpp import Llama

        handler = None
        if mmproj_path is not None:
            from .vision import make_chat_handler

            handler = make_chat_handler(chat_handler, mmproj_path)
        offload = dict(offload or {})
        params = {"use_extra_bufts": False} if parallel > 1 else {}
        overrides = offload.pop("tensor_buft_overrides", None)  # not a parameter of Llama's: set on its params
        if overrides is not None:
            params["tensor_buft_overrides"] = ctypes.addressof(overrides)
        with _model_params(**params):
            llm = Llama(str(model_path), n_ctx=n_ctx, n_threads=n_threads, chat_handler=handler, swa_full=False,
                        verbose=False, **offload)
        _make_context(llm, n_ctx, parallel)
        model = LlamaCppModel(llm, handler)
        model.overrides = overrides  # llama.cpp keeps the model's params: the array lives as long as the model
        return model


_LOADING = threading.Lock()


@contextlib.contextmanager
def _model_params(**changes):
    """Load a model with these llama_model_params fields changed, which llama-cpp-python's Llama does not take:
    its default model parameters are swapped for the load, under a lock.

    use_extra_bufts=False (parallel above 1) keeps llama.cpp from repacking the weights for its CPU matrix
    kernels. With repacked weights a token's logits depend on how many rows its decode holds (up to 2.9 apart
    on Gemma 3 between one stream and four), so a stream would answer differently with company than alone.
    Without, every row is computed the same way whatever the batch (bit for bit, measured).
    tensor_buft_overrides: where some tensors go (a split keeps the output layer here, ggml_rpc.on_this_cpu)."""
    from llama_cpp import llama_cpp as lib

    defaults = lib.llama_model_default_params

    def changed():
        params = defaults()
        for name, value in changes.items():
            setattr(params, name, value)
        return params

    with _LOADING:  # every load takes it, so no other load sees the swapped function
        lib.llama_model_default_params = changed if changes else defaults
        try:
            yield
        finally:
            lib.llama_model_default_params = defaults


def _make_context(llm, n_ctx: int, parallel: int) -> None:
    """Give the context one pool of n_ctx cells that `parallel` sequences share (llama.cpp's unified cache),
    the sliding-window layers' cache at the window's size, and flash attention where llama.cpp has it for
    the model and its heads are at least 64 wide.

    One pool: a model costs one context's memory whatever its streams, and one stream alone may use all of
    it (llamacpp_batch.py shares it out). Flash attention on Gemma 3 here: 7 % more tokens/s for one stream,
    13 % more for four. On the tests' tiny model (16-wide heads) it read prompts 4 times slower.
    llama-cpp-python's Llama takes neither n_seq_max nor "auto" for flash attention: the context it made is
    freed, then made again."""
    import llama_cpp
    from llama_cpp import _internals

    params = llm.context_params
    llm._ctx.close()
    params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx, parallel, True  # swa_full off: Llama(...) set it
    if _head_size(llm) >= 64:
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
    llm._ctx = llm._stack.enter_context(contextlib.closing(
        _internals.LlamaContext(model=llm._model, params=params, verbose=False)))


def _head_size(llm) -> int:
    """The width of the model's attention heads, from its header (0 when it does not say plainly)."""
    meta = llm.metadata
    arch = meta.get("general.architecture", "")
    try:
        if meta.get(f"{arch}.attention.key_length"):
            return int(meta[f"{arch}.attention.key_length"])
        return int(meta.get(f"{arch}.embedding_length", 0)) // max(1, int(meta.get(f"{arch}.attention.head_count", 1)))
    except ValueError:  # per-layer head counts, written as a list
        return 0


class LlamaCppModel:
    """One loaded llama.cpp model. Not thread-safe: every stream is stepped from one thread (engine.py),
    `parallel` of them at once (llamacpp_batch.py)."""

    def __init__(self, llm, chat_handler=None):
        import llama_cpp

        self._lib = llama_cpp
        self.llm = llm
        self.chat_handler = chat_handler
        self._ctx = llm._ctx.ctx
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx)  # the pool, which one stream alone may fill
        self.parallel = llm.context_params.n_seq_max
        self._batch = Batch(llama_cpp, self._ctx, self.parallel, llm.n_batch, self.n_ctx,
                            window=llama_cpp.llama_model_n_swa(llm._model.model))
        self._n_vocab = llm.n_vocab()
        self.capabilities = frozenset({TEXT, VISION} if chat_handler else {TEXT})
        self._vocab = llm._model.vocab
        self._piece = ctypes.create_string_buffer(256)
        self._formatter = self._make_formatter()
        if chat_handler:
            from .vision import first_guess_tokens_per_image

            self.tokens_per_image = first_guess_tokens_per_image(self.n_ctx)  # measured on the first image
            self.image_measured = False

    def _make_formatter(self):
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        model = self.llm._model
        bos, eos = self.llm.token_bos(), self.llm.token_eos()
        return Jinja2ChatFormatter(
            template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
        )

    def prepare(self, messages: list[dict], images: list | None = None) -> Prepared:
        if images:
            from .vision import prepare_vision

            return prepare_vision(self, messages, images)
        if self._formatter is not None:
            result = self._formatter(messages=messages)
            tokens = self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
            stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
            return Prepared(len(tokens), tokens, tuple(s for s in stop if s))
        tokens = self.llm.tokenize(plain_prompt(messages).encode("utf-8"), add_bos=True, special=False)
        return Prepared(len(tokens), tokens, PLAIN_STOP)

    def prepare_raw(self, text: str) -> Prepared:
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        return Prepared(len(tokens), tokens)

    def stream(self, prepared: Prepared, options: GenerationOptions) -> Iterator[str]:
        if prepared.images:
            yield from self._stream_vision(prepared, options)
            return
        budget = min(options.max_new_tokens, self.n_ctx - prepared.n_tokens)
        if budget <= 0:
            return
        batch, prompt = self._batch, prepared.payload
        seq, pick = batch.claim(prompt), None
        try:
            # The prompt is read in pieces; each empty yield lets the engine cancel the stream or step another.
            yield from batch.read(seq, prompt)
            pick = sampler(self._lib, self._ctx, self._n_vocab, options, seq.tokens)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            prepared.generated = 0
            for count in range(1, budget + 1):
                token = pick.pick(batch, seq)
                if self._lib.llama_vocab_is_eog(self._vocab, token):
                    break
                prepared.generated = count
                if count < budget:
                    batch.queue(seq, [token], logits=True)  # before yielding: the others' turns decode it too
                text = decoder.decode(self._token_bytes(token))
                if text:
                    yield text
                if count == budget:
                    break
                while not batch.ready(seq):
                    yield ""
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
        finally:
            if pick is not None:
                pick.close()
            batch.release(seq)

    def _stream_vision(self, prepared: Prepared, options: GenerationOptions) -> Iterator[str]:
        """Images go through llama-cpp-python's chat handler, which cannot batch: the request holds the whole
        model (the queue gives it every slot) and its own use of the cache replaces the sequences'."""
        from .vision import stream_vision

        if self._batch.lend():
            self.llm.n_tokens = 0
        yield from stream_vision(self, prepared, options)

    def warm_up(self) -> Iterator[str]:
        """Decode one token and forget it, as llama-server does: the weights are read in now rather than by
        the first request, and the memory measured after a load is what the model takes. Run it on the thread
        that computes the streams (engine.py): a decode on another thread starts another OpenMP team, and
        two teams on two cores made every token slower (measured: a fifth)."""
        bos = self.llm.token_bos()
        self._lib.llama_decode(self._ctx, self._lib.llama_batch_get_one((ctypes.c_int32 * 1)(max(bos, 0)), 1))
        self._batch.reset()
        yield from ()

    @property
    def cache_used(self) -> int:
        """Tokens the cache pool holds now (running streams and idle chats' prefixes), of n_ctx."""
        return self._batch.held

    @property
    def prompt_tokens(self) -> tuple[int, int]:
        """(prompt tokens evaluated, prompt tokens found in the cache instead) since the model was loaded."""
        return self._batch.prompt_evaluated, self._batch.prompt_reused

    def _token_bytes(self, token: int) -> bytes:
        n = self._lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        return self._piece.raw[:n]

    def close(self) -> None:
        if self.chat_handler is not None and hasattr(self.chat_handler, "close"):
            self.chat_handler.close()
        self._batch.close()
        self.llm.close()
