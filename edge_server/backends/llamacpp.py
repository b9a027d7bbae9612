"""The lite backend: GGUF models in llama-cpp-python. llama_cpp is imported on first load only."""
from __future__ import annotations

import codecs
import ctypes
import logging
import time
from pathlib import Path
from typing import Iterator

from ..prompts import PLAIN_STOP, plain_prompt
from .base import TEXT, VISION, GenerationOptions, Prepared
from .gguf_header import context_length, memory_needs

log = logging.getLogger("edge_server.llamacpp")

NAME = "llama-cpp"
PIECE_SECONDS = 0.1  # prompt reading yields this often: the bound on cancel latency and on other models' waits


def register(registry) -> None:
    registry.register(NAME, LlamaCppBackend)


class LlamaCppBackend:
    name = NAME

    def trained_context(self, model_path: Path) -> int | None:
        return context_length(model_path)

    def memory_needs(self, model_path: Path, mmproj_path: Path | None = None):
        return memory_needs(model_path, mmproj_path.stat().st_size if mmproj_path else 0)

    def load(self, model_path: Path, *, n_ctx: int, mmproj_path: Path | None = None,
             chat_handler: str | None = None, n_threads: int | None = None, kind: str = TEXT,
             device: str | None = None) -> "LlamaCppModel":
        """kind follows from the files here (a projector means vision); device: llama.cpp runs on the CPU."""
        from llama_cpp import Llama

        handler = None
        if mmproj_path is not None:
            from .vision import make_chat_handler

            handler = make_chat_handler(chat_handler, mmproj_path)
        llm = Llama(str(model_path), n_ctx=n_ctx, n_threads=n_threads, chat_handler=handler, verbose=False)
        return LlamaCppModel(llm, handler)


class LlamaCppModel:
    """One loaded llama.cpp model. Not thread-safe: the caller runs one generation at a time."""

    def __init__(self, llm, chat_handler=None):
        import llama_cpp

        self._lib = llama_cpp
        self.llm = llm
        self.chat_handler = chat_handler
        self.n_ctx = llm.n_ctx()
        self.capabilities = frozenset({TEXT, VISION} if chat_handler else {TEXT})
        self._vocab = llm._model.vocab
        self._piece = ctypes.create_string_buffer(256)
        self._formatter = self._make_formatter()
        self._piece_tokens = 64  # prompt tokens per piece; adapts to the measured speed
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
            from .vision import stream_vision

            yield from stream_vision(self, prepared, options)
            return
        llm, lib = self.llm, self._lib
        if options.seed is not None:
            llm.set_seed(options.seed)
        else:
            llm.set_seed(lib.LLAMA_DEFAULT_SEED)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        budget = min(options.max_new_tokens, self.n_ctx - prepared.n_tokens)
        if budget <= 0:
            return
        # The prompt is read in pieces; each empty yield lets the engine cancel the stream or step another.
        yield from self._read_prompt(prepared.payload)
        if options.temperature == 0 and not (options.presence_penalty or options.frequency_penalty):
            tokens = self._greedy(options.repeat_penalty)
        else:  # finds the whole prompt cached and samples at once
            tokens = llm.generate(
                prepared.payload, top_k=options.top_k, top_p=options.top_p, temp=options.temperature,
                repeat_penalty=options.repeat_penalty, presence_penalty=options.presence_penalty,
                frequency_penalty=options.frequency_penalty,
            )
        try:
            for count, token in enumerate(tokens, 1):
                if lib.llama_vocab_is_eog(self._vocab, token):
                    break
                text = decoder.decode(self._token_bytes(token))
                if text:
                    yield text
                if count >= budget:
                    break
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
        finally:
            tokens.close()

    def _read_prompt(self, prompt: list[int]) -> Iterator[str]:
        """Evaluate the prompt in pieces of about PIECE_SECONDS, yielding "" after each.

        A 6,000-token prompt takes half a minute on a phone-class CPU; read in one call it could not
        be cancelled and held every other model's stream for that long. The piece size adapts to the
        measured speed, between 16 tokens and the batch size. The KV cache is reused for the longest
        common prefix, as Llama.generate does.
        """
        llm = self.llm
        cached = llm.input_ids[:llm.n_tokens].tolist()
        prefix = 0
        for a, b in zip(cached, prompt):
            if a != b:
                break
            prefix += 1
        prefix = min(prefix, len(prompt) - 1)  # the last prompt token is evaluated again for its logits
        if prefix > 0 and not llm._ctx.kv_cache_seq_rm(-1, prefix, -1):
            prefix = 0  # this model's cache cannot drop a suffix: start over
        llm.n_tokens = prefix
        llm._ctx.kv_cache_seq_rm(-1, prefix, -1)
        size, start = self._piece_tokens, prefix
        while start + size < len(prompt):
            began = time.perf_counter()
            self._eval_without_logits(prompt[start:start + size])
            start += size
            took = time.perf_counter() - began
            size = max(16, min(llm.n_batch, int(size * PIECE_SECONDS / max(took, 1e-4))))
            self._piece_tokens = size
            yield ""
        llm.eval(prompt[start:])  # the last piece, with the logits the first token is chosen from

    def _eval_without_logits(self, tokens: list[int]) -> None:
        """Llama.eval for a piece in the middle of a prompt, asking for no logits.

        Llama.eval computes the logits of each call's last token: through Gemma 3's 262k-word output
        layer that is about 35 ms a piece, and made prompts read in 0.1 s pieces 40 % slower. Without
        it they are about 10 % slower than read whole.
        """
        llm, n_past = self.llm, self.llm.n_tokens
        llm._batch.set_batch(batch=tokens, n_past=n_past, logits_all=False)
        llm._batch.batch.logits[len(tokens) - 1] = False
        llm._ctx.decode(llm._batch)
        llm.input_ids[n_past:n_past + len(tokens)] = tokens
        llm.n_tokens += len(tokens)

    def _greedy(self, repeat_penalty: float) -> Iterator[int]:
        """Greedy decoding with an argmax over the logits of the prompt just read.

        llama.cpp's sampler chain copies the whole vocabulary into a candidate array for every
        token: 0.5 ms a token for Gemma 3's 262k vocabulary, 2.5 % of its time on a phone-class
        CPU. A plain argmax (with the same repeat penalty over the last 64 tokens) costs 0.03 ms.
        """
        import numpy as np

        llm, lib = self.llm, self._lib
        n_vocab, window = llm.n_vocab(), 64
        while True:
            logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(n_vocab,))
            if repeat_penalty != 1.0:
                recent = np.unique(llm.input_ids[max(0, llm.n_tokens - window):llm.n_tokens])
                logits = logits.copy()
                values = logits[recent]
                logits[recent] = np.where(values > 0, values / repeat_penalty, values * repeat_penalty)
            token = int(logits.argmax())
            yield token
            llm.eval([token])

    def _token_bytes(self, token: int) -> bytes:
        n = self._lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        return self._piece.raw[:n]

    def close(self) -> None:
        if self.chat_handler is not None and hasattr(self.chat_handler, "close"):
            self.chat_handler.close()
        self.llm.close()
