"""Image-text-to-text models in transformers (LLaVA, Idefics3/SmolVLM: none needs torchvision)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

from edge_server.backends import TEXT, VISION, GenerationOptions, Prepared

from . import device as devices
from .decoding import decode, eos_ids


def _parts(content) -> list[dict]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


class VisionModel(devices.Held):
    """One loaded vision-language model with its processor; the images (JPEG bytes) go into the last turn."""

    def __init__(self, model, processor, device, dtype, n_ctx: int):
        self.model, self.processor, self.device, self.dtype = model, processor, device, dtype
        self.n_ctx = n_ctx
        self.capabilities = frozenset({TEXT, VISION})
        self.eos = eos_ids(model, processor.tokenizer)

    @classmethod
    def load(cls, folder: Path, device, dtype, n_ctx: int) -> "VisionModel":
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(folder)
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype,
                                                            variant=devices.weights_variant(folder)).to(device).eval()
        return cls(model, processor, device, dtype, n_ctx)

    def prepare(self, messages: list[dict], images: list | None = None) -> Prepared:
        from PIL import Image

        pictures = [Image.open(io.BytesIO(data)).convert("RGB") for data in images or ()]
        conversation = [{"role": m["role"], "content": _parts(m["content"])} for m in messages]
        if pictures:
            last = conversation[-1]
            last["content"] = [{"type": "image", "image": p} for p in pictures] + last["content"]
        inputs = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                                    return_dict=True, return_tensors="pt")
        n = int(inputs["input_ids"].shape[1])
        return Prepared(n, inputs, images=list(images or ()), text_tokens=n)

    def prepare_raw(self, text: str) -> Prepared:
        inputs = self.processor.tokenizer(text, return_tensors="pt")
        return Prepared(int(inputs["input_ids"].shape[1]), inputs)

    def stream(self, prepared: Prepared, options: GenerationOptions) -> Iterator[str]:
        inputs = {}
        for key, value in prepared.payload.items():
            if hasattr(value, "to"):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            inputs[key] = value
        yield from decode(self.model, self.processor.tokenizer, inputs, self.n_ctx, options, self.eos)
