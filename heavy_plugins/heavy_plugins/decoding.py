"""The decoding loop shared by the transformers text and vision models: each `next()` computes one token.

Below both model modules (transformers_backend.py, vision.py), which import it; it imports neither.
"""
from __future__ import annotations

from typing import Iterator

from edge_server.backends import GenerationOptions


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
