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


class Detokenizer:
    """Token ids in, complete text pieces out (a character split over tokens waits for its last byte)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = 0

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        piece = text[self.sent:]
        if text.endswith("\n"):  # start a new window, so decoding stays linear in the answer's length
            self.ids, self.sent = [], 0
        else:
            self.sent = len(text)
        return piece


def _processors(options: GenerationOptions):
    from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                              TopKLogitsWarper, TopPLogitsWarper)

    chain = LogitsProcessorList()
    if options.repeat_penalty and options.repeat_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(options.repeat_penalty))
    if options.temperature > 0:
        chain.append(TemperatureLogitsWarper(options.temperature))
        if options.top_k > 0:
            chain.append(TopKLogitsWarper(options.top_k))
        if 0 < options.top_p < 1:
            chain.append(TopPLogitsWarper(options.top_p))
    return chain


def decode(model, tokenizer, inputs: dict, n_ctx: int, options: GenerationOptions, eos: set[int]) -> Iterator[str]:
    """Read the prompt (`inputs`, on the model's device), then yield the answer a token at a time."""
    import torch

    ids = inputs["input_ids"]
    budget = min(options.max_new_tokens, n_ctx - ids.shape[1])
    if budget <= 0:
        return
    chain = _processors(options)
    generator = torch.Generator()  # sampling happens on the CPU, so a seed gives the same answer anywhere
    if options.seed is not None:
        generator.manual_seed(options.seed)
    else:
        generator.seed()
    text = Detokenizer(tokenizer)
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(ids)
    with torch.inference_mode():
        # logits_to_keep=1: the output layer runs for the last position only (Gemma 3's has 262k rows).
        out = model(**{**inputs, "attention_mask": mask}, use_cache=True, logits_to_keep=1)
        yield ""  # the prompt is read: the engine may cancel or step another stream here
        for _ in range(budget):
            scores = chain(ids, out.logits[:, -1, :].float())
            if options.temperature > 0:
                probs = torch.softmax(scores.cpu(), dim=-1)
                token = torch.multinomial(probs, 1, generator=generator).to(ids.device)
            else:
                token = scores.argmax(dim=-1, keepdim=True)
            if int(token) in eos:
                break
            piece = text.add(int(token))
            if piece:
                yield piece
            ids = torch.cat([ids, token], dim=1)
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = model(input_ids=token, attention_mask=mask, cache=out.cache, use_cache=True, logits_to_keep=1)


def eos_ids(model, tokenizer) -> set[int]:
    found = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        found.update(value if isinstance(value, list) else [value] if value is not None else [])
    return found


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
