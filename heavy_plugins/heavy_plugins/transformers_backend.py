"""Text models in transformers, streamed a token at a time on edge-server's engine thread.

transformers' own `generate()` runs to the end in one call (streaming needs it on a thread of its
own, with a queue). Here the decoding loop is a generator: each `next()` computes one token, so
the engine thread steps it like a llama.cpp stream, and closing it stops generation within a
token (a client that disconnects, a kill, POST /generate/stop).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator

from edge_server.backends import SPEECH_OUT, TEXT, VISION, GenerationOptions, Prepared
from edge_server.prompts import PLAIN_STOP, plain_prompt

from . import device as devices
from .decoding import decode, eos_ids

log = logging.getLogger("heavy_plugins.transformers")


def read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder} holds no readable config.json ({exc})") from None


class TransformersBackend:
    name = "transformers"

    def trained_context(self, model_path: Path) -> int | None:
        config = read_config(model_path)
        for part in (config, config.get("text_config") or {}):
            if isinstance(part.get("max_position_embeddings"), int):
                return part["max_position_embeddings"]
        return None

    def memory_needs(self, model_path: Path, mmproj_path: Path | None = None):
        return None  # no estimate yet: full mode runs on machines with room; a failed load says why

    def load(self, model_path: Path, *, n_ctx: int, mmproj_path: Path | None = None, chat_handler: str | None = None,
             n_threads: int | None = None, kind: str = TEXT, device: str | None = None):
        where, dtype = devices.choose(device, n_threads)
        devices.quiet()
        log.info("loading %s as %s on %s (%s)", model_path, kind, where, dtype)
        if kind == SPEECH_OUT:
            from .speech import SpeechModel

            return SpeechModel.load(model_path, where)
        if kind == VISION:
            from .vision import VisionModel

            return VisionModel.load(model_path, where, dtype, n_ctx)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype,
                                                     variant=devices.weights_variant(model_path)).to(where).eval()
        return TextModel(model, tokenizer, where, n_ctx)


class TextModel(devices.Held):
    """One loaded causal language model. Not thread-safe: the engine runs one step at a time."""

    def __init__(self, model, tokenizer, device, n_ctx: int):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.n_ctx = n_ctx
        self.capabilities = frozenset({TEXT})
        self.eos = eos_ids(model, tokenizer)

    def prepare(self, messages: list[dict], images: list | None = None) -> Prepared:
        if self.tokenizer.chat_template:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                     return_dict=False)
            return Prepared(len(ids), ids)
        ids = self.tokenizer(plain_prompt(messages))["input_ids"]
        return Prepared(len(ids), ids, PLAIN_STOP)

    def prepare_raw(self, text: str) -> Prepared:
        ids = self.tokenizer(text)["input_ids"]
        return Prepared(len(ids), ids)

    def stream(self, prepared: Prepared, options: GenerationOptions) -> Iterator[str]:
        import torch

        ids = torch.tensor([prepared.payload], device=self.device)
        yield from decode(self.model, self.tokenizer, {"input_ids": ids}, self.n_ctx, options, self.eos)
